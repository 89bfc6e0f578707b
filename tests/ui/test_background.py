"""BackgroundOp: the work runs off the GUI thread; success, failure and finally run back on it."""

from __future__ import annotations

import threading

from PySide6.QtWidgets import QWidget

from app.core.errors import InputError, describe
from app.ui.background import BackgroundOp


class Window(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def show_problem(self, text: str) -> None:
        self.problems.append(text)


def test_success_runs_on_the_gui_thread_with_the_result(qtbot) -> None:
    w = Window()
    qtbot.addWidget(w)
    seen: dict[str, object] = {}
    done = threading.Event()

    def work() -> int:
        seen["work"] = threading.get_ident()
        return 42

    def success(value: int) -> None:
        seen["success"] = (threading.get_ident(), value)

    BackgroundOp(w, work, success=success, finally_=done.set).run()
    qtbot.waitUntil(done.is_set, timeout=5000)
    assert seen["work"] != threading.main_thread().ident
    assert seen["success"] == (threading.main_thread().ident, 42)
    assert not w.problems


def test_every_failure_reaches_the_default_handler_and_finally_still_runs(qtbot) -> None:
    w = Window()
    qtbot.addWidget(w)
    finished: list[int] = []

    def user_error() -> None:
        raise InputError("That file is not a GGUF model; choose the .gguf file.")

    def bug() -> None:
        raise KeyError("oops")

    for op in (user_error, bug):
        BackgroundOp(w, op, finally_=lambda: finished.append(threading.get_ident())).run()
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=5000)
    # The two threads race, so either may be reported first.
    assert sorted(w.problems) == ["That file is not a GGUF model; choose the .gguf file.",
                                  "Unexpected error: KeyError: 'oops'"]
    assert set(finished) == {threading.main_thread().ident}  # e.g. re-enable a button: never stuck


def test_a_failing_success_handler_is_reported_too(qtbot) -> None:
    w = Window()
    qtbot.addWidget(w)

    def success(_v: object) -> None:
        raise RuntimeError("drawing failed")

    BackgroundOp(w, lambda: 1, success=success).run()
    qtbot.waitUntil(lambda: bool(w.problems), timeout=5000)
    assert w.problems == ["Unexpected error: RuntimeError: drawing failed"]
    assert describe(OSError(28, "No space left on device")) == ("the disk is full. Free some space and try again "
                                                              "(what was saved before is kept)")


def test_progress_reaches_the_gui_thread_in_order_before_success(qtbot) -> None:
    w = Window()
    qtbot.addWidget(w)
    seen: list[tuple[str, object, bool]] = []
    done = threading.Event()

    def work(report) -> str:  # type: ignore[no-untyped-def]
        for i in range(5):
            report(i)
        return "ok"

    def on_gui(kind: str):  # type: ignore[no-untyped-def]
        return lambda value: seen.append((kind, value, threading.get_ident() == threading.main_thread().ident))

    BackgroundOp(w, work, progress=on_gui("progress"), success=on_gui("success"), finally_=done.set).run()
    qtbot.waitUntil(done.is_set, timeout=5000)
    assert seen == [("progress", i, True) for i in range(5)] + [("success", "ok", True)]
