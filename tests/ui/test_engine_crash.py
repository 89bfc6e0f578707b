"""A native fault in the model's engine never takes the window down (issue: SIGILL on a CPU with AMX).

Real signals to the real engine process mid-session: SIGSEGV and SIGILL as llama.cpp or a driver would
raise them, SIGKILL as the out-of-memory killer sends it. The window stays and says what happened, the
session's file is intact, and the next Start works.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app.core.sessions import load_session
from app.core.types import StepResult

from .conftest import configure

LONG = 30_000


@pytest.mark.parametrize("sig, words", [(signal.SIGSEGV, "segmentation fault"), (signal.SIGILL, "instruction"),
                                        (signal.SIGKILL, "memory")])
def test_the_window_survives_a_crashed_engine_and_starts_again(qtbot, make_window, vtest_avi: Path,
                                                               sig: int, words: str) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, talk=50)
    w.show()
    got: list[StepResult] = []
    w.worker.step.connect(got.append)
    w.start()
    qtbot.waitUntil(lambda: w.state == "running" and len(got) >= 2, timeout=LONG)
    session_dir = w.controller.writer.directory
    engine = w.controller.backend
    os.kill(engine.pid, sig)

    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
    assert w.isVisible()
    name = signal.Signals(sig).name
    qtbot.waitUntil(lambda: w.watch.banner.isVisible(), timeout=LONG)
    shown = w.watch.banner.text()
    assert name in shown and words in shown and "saved" in shown
    saved = load_session(session_dir)
    assert saved.ended == "error" and len(saved.steps) >= 2
    assert len(saved.replies) == len([r for r in got if not r.silent])

    got.clear()
    w.start()  # Start works again, on the fallback the crash offered where it offered one
    qtbot.waitUntil(lambda: w.state == "running" and len(got) >= 2, timeout=LONG)
    assert w.controller.backend is not engine
    if sig != signal.SIGKILL:
        assert w.controller.backend.cpu_variant_loaded == "x64"
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
