"""Saved sessions with feedback → training dialogues: re-read frames, corrected targets, windows, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import protocol
from app.trainer.data import DataError, read_turn_frames
from app.trainer.session_dialogues import load_session_dialogues


def _saved_session(root, path, said, meta=None):
    from app.core.sessions import SessionStore, session_meta
    from app.core.types import Frame, StepResult

    w = SessionStore(root).create(meta or session_meta(str(path), "demo", interval=1.0, frames_per_turn=2,
                                                         tokens_per_frame=16, talkativeness=0.0,
                                                         video=str(path.resolve())))
    img = np.zeros((8, 8, 3), np.uint8)
    for i, text in enumerate(said):
        t = 2.0 * (i + 1)
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == protocol.NO_REPLY,
                              question="Q" if i == 0 else None,
                              frames=(Frame(img, time=t - 1), Frame(img, time=t))), thumbnail=False)
    w.close("ended")
    return w.directory


def test_session_with_feedback_becomes_the_dialogue_it_should_have_been(video, tmp_path):
    from app.core import feedback as fbk
    from app.core.sessions import add_mark, load_session
    _, path = video
    d = _saved_session(tmp_path, path, ["NO REPLY", "NO REPLY", "A thing appeared.", "Again a thing."])
    steps = load_session(d).steps
    add_mark(d, fbk.make("late", 6.0, steps))
    add_mark(d, fbk.make("redundant", 8.0, steps))
    add_mark(d, fbk.make("missed", 1.5, steps, text="Hello."))
    (dlg,) = load_session_dialogues([d])
    assert [t.target for t in dlg.turns] == ["Hello.", "A thing appeared.", "NO REPLY", "NO REPLY"]
    assert [t.user_text for t in dlg.turns] == ["Q", "", "", ""]
    frames = read_turn_frames(path, 1.0, 2, 16)  # the frames the model saw, re-read from the video
    assert all(np.array_equal(a, b) for t, f in zip(dlg.turns, frames) for a, b in zip(t.images, f.images))
    # a long session is cut into windows, and only windows holding a mark are trained
    assert dlg.meta["touched"] == [0, 1, 2, 3]
    assert [len(w.turns) for w in load_session_dialogues([d], window_turns=3)] == [3, 1]
    add_mark(d, fbk.make("late", 6.0, steps, on=False))
    add_mark(d, fbk.make("redundant", 8.0, steps, on=False))
    assert [w.id[-3:] for w in load_session_dialogues([d], window_turns=2)] == ["#w0"]  # only "missed" at 1.5 s


def test_session_of_a_live_source_or_a_moved_video_is_refused_by_name(video, tmp_path):
    _, path = video
    cam = _saved_session(tmp_path / "a", path, ["Hi."], meta={"source": "camera:0", "interval": 1.0})
    with pytest.raises(DataError, match=r"camera:0.*not a video file"):
        load_session_dialogues([cam])
    moved = _saved_session(tmp_path / "b", path, ["Hi."], meta={"source": str(tmp_path / "gone.avi")})
    with pytest.raises(DataError, match=r"session .*gone.avi"):
        load_session_dialogues([moved])
    with pytest.raises(DataError, match="not a saved session"):
        load_session_dialogues([tmp_path])
