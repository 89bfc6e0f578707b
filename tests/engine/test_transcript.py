"""The controller's transcript: replies take feedback, a failed start leaves no entry, a failed write is said once."""

from __future__ import annotations

import contextlib
from pathlib import Path

from app.core.session_read import load_session
from app.core.sessions import SessionStore
from app.core.types import StepResult
from app.engine.events import Event, Problem
from app.engine.factory import RunRequest
from app.engine.transcript import Transcript


def _step(turn: int, text: str) -> StepResult:
    return StepResult(turn=turn, video_time=2.0 * (turn + 1), text=text, silent=text == "NO REPLY")


def test_replies_take_feedback_and_a_failed_write_is_reported_once(tmp_path: Path) -> None:
    events: list[Event] = []
    t = Transcript(SessionStore(tmp_path / "sessions"), events.append)
    t.open(RunRequest(source=str(tmp_path / "clip.avi"), model="tiny"), "CPU", "clip.avi")
    assert t.writer is not None and t.session_id == t.writer.id
    assert t.writer.meta["video"] == str((tmp_path / "clip.avi").resolve()) and t.writer.meta["device"] == "CPU"
    t.step(_step(0, "NO REPLY"))
    t.step(_step(1, "A man walks in."))
    assert not t.feedback(0, "late"), "silence is no reply to mark"
    assert t.feedback(1, "late")
    t.fold(1)
    directory, writer = t.writer.directory, t.writer

    log = writer._fh
    writer._fh = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115 - the kernel's own ENOSPC on a write
    t.question("who is he?", spoken=False)
    t.question("and now?", spoken=False)
    with contextlib.suppress(OSError):  # the record that did not fit is still in its buffer
        writer._fh.close()
    writer._fh = log
    writer.close()
    assert [type(e) for e in events] == [Problem] and "goes on unsaved" in events[0].message
    assert t.writer is None and not t.feedback(1, "wrong")
    t.close("stopped")  # nothing left to close: no second problem
    assert len(events) == 1

    saved = load_session(directory)
    assert [s["turn"] for s in saved.steps] == [0, 1] and saved.steps[1]["folded"]
    assert saved.feedback == {1: {"late"}}


def test_a_session_without_a_turn_leaves_no_entry_and_no_store_keeps_nothing(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    t = Transcript(store, lambda e: None)
    t.open(RunRequest(source="screen", model="tiny"), "CPU", "Screen 1")
    assert t.session_id is not None
    t.close("error")
    assert t.session_id is None and store.list() == []

    unsaved = Transcript(None, lambda e: None)
    unsaved.open(RunRequest(source="screen", model="tiny"), "CPU", "Screen 1")
    unsaved.step(_step(0, "Hello."))
    assert unsaved.session_id is None and 0 in unsaved.replies and not unsaved.feedback(0, "late")


def test_the_controller_is_freed_without_the_cyclic_gc(tmp_path: Path) -> None:
    """The transcript reports through its controller without holding it: no cycle left for the cyclic GC
    to free (with the model in it) on whatever thread it happens to run."""
    import gc
    import weakref

    from app.engine.controller import SessionController

    gc.disable()
    try:
        c = SessionController(store=SessionStore(tmp_path))
        ref = weakref.ref(c)
        del c
        assert ref() is None
    finally:
        gc.enable()
