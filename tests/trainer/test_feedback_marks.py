"""What a "good" mark puts into the training data built from a session (``duet train feedback``).

A good mark changes no target (the reply stays as the model said it), so the only thing that makes it
train is that its turn counts as *touched*: a long session is cut into windows and only windows holding
a touched turn are trained. Without that, a session whose only marks are "good" trains nothing.
"""

from __future__ import annotations

import numpy as np

from app.core import protocol
from app.trainer.session_dialogues import load_session_dialogues

SAID = ["NO REPLY", "NO REPLY", "A square appeared.", "NO REPLY"]  # the test video holds four turns


def _saved_session(root, path):
    from app.core.sessions import SessionStore, session_meta
    from app.core.types import Frame, StepResult

    w = SessionStore(root).create(session_meta(str(path), "demo", interval=1.0, frames_per_turn=2,
                                               tokens_per_frame=16, talkativeness=0.0, video=str(path.resolve())))
    img = np.zeros((8, 8, 3), np.uint8)
    for i, text in enumerate(SAID):
        t = 2.0 * (i + 1)
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == protocol.NO_REPLY,
                              frames=(Frame(img, time=t - 1), Frame(img, time=t))), thumbnail=False)
    w.close("ended")
    return w.directory


def test_a_good_mark_keeps_its_reply_and_its_window_is_trained(video, tmp_path):
    from app.core import feedback as fbk
    from app.core.sessions import add_mark, load_session

    _, path = video
    d = _saved_session(tmp_path, path)
    assert load_session_dialogues([d], window_turns=2) == []  # no mark: nothing of a long session is trained
    add_mark(d, fbk.make("good", 6.0, load_session(d).steps))  # the reply at turn 2
    (whole,) = load_session_dialogues([d], window_turns=0)
    assert [t.target for t in whole.turns] == SAID  # the target is the reply as said
    assert whole.meta["touched"] == [2] and whole.meta["marks"] == 1
    (window,) = load_session_dialogues([d], window_turns=2)
    assert window.id.endswith("#w1")  # turns 2 and 3: the window with the good reply
    assert [t.target for t in window.turns] == ["A square appeared.", "NO REPLY"]


def test_a_good_mark_switched_off_trains_nothing(video, tmp_path):
    from app.core import feedback as fbk
    from app.core.sessions import add_mark, load_session

    _, path = video
    d = _saved_session(tmp_path, path)
    steps = load_session(d).steps
    add_mark(d, fbk.make("good", 6.0, steps))
    add_mark(d, fbk.make("good", 6.0, steps, on=False))
    assert load_session_dialogues([d], window_turns=2) == []


def test_every_change_of_the_marks_changes_the_digest_that_keys_a_feedback_run(video, tmp_path):
    """A feedback job resumes from its checkpoints only while the marks are the same (the recipe holds
    ``marks_digest``): a new mark, a withdrawn one or another correction text must each give another digest."""
    from app.core import feedback as fbk
    from app.core.sessions import add_mark, load_session
    from app.trainer.feedback_job import marks_digest

    _, path = video
    d = _saved_session(tmp_path, path)
    steps = load_session(d).steps
    seen = [marks_digest([d])]
    assert marks_digest([d]) == seen[0]  # nothing changed: the same digest, so a rerun resumes
    add_mark(d, fbk.make("good", 6.0, steps))
    seen.append(marks_digest([d]))
    add_mark(d, fbk.make("missed", 2.0, steps, text="A square."))
    seen.append(marks_digest([d]))
    add_mark(d, fbk.make("missed", 2.0, steps, text="A red square."))  # the same moment, another text
    seen.append(marks_digest([d]))
    add_mark(d, fbk.make("good", 6.0, steps, on=False))
    seen.append(marks_digest([d]))
    assert len(set(seen)) == len(seen), seen
