"""Reading a session back: a record cut short by a kill is skipped and counted, the rest kept.

(Damaged and wrong-typed records and meta files of every kind: tests/faults/test_user_files.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.session_read import load_session
from app.core.sessions import SessionStore
from app.core.types import Frame, StepResult


def test_cut_off_last_line_is_skipped(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({"source": "screen"})
    w.add_step(StepResult(turn=0, video_time=2.0, text="hello", silent=False, frames=(Frame(np.zeros((8, 8, 3), np.uint8), time=0.0),)))
    w._fh.write('{"type": "step", "turn": 1, "te')  # the kill landed mid-write
    w._fh.flush()
    s = load_session(w.directory)
    assert len(s.steps) == 1 and s.damaged_lines == 1 and s.ended is None
    assert s.problem == "1 damaged record(s) skipped"
