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


def test_step_fields_of_an_older_duet_are_read_under_their_new_names(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({"source": "screen"})
    w.add_record({"type": "step", "turn": 0, "time": 2.0, "text": "hi", "silent": False,
                  "n_tokens": 412, "evicted_turns": 3})  # as a session saved before the rename
    w.add_step(StepResult(turn=1, video_time=4.0, text="NO REPLY", silent=True, kv_cells=480, turns_frames_dropped=4))
    w.close()
    old, new = load_session(w.directory).steps
    assert (old["kv_cells"], old["turns_frames_dropped"]) == (412, 3) and "n_tokens" not in old
    assert (new["kv_cells"], new["turns_frames_dropped"]) == (480, 4)
