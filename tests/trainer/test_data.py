"""Training dialogues: inference-identical frames and strings, END placement, loss mask, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.core import protocol
from app.eval.dataset import Dataset, Example, GoldAnswer, UserText
from app.trainer.data import (
    DataError,
    Sources,
    TurnFrames,
    answer_turn,
    dialogue_from_example,
    heldout_subset,
    load_examples,
    read_turn_frames,
)


def test_frames_are_the_sessions_frames(video):
    _, path = video
    turns = read_turn_frames(path, 1.0, 2, 16)
    assert [t.time for t in turns] == [2.0, 4.0, 6.0, 8.0]  # video time = last frame's time
    assert all(im.shape == (112, 112, 3) for t in turns for im in t.images)  # fit_frame at 16 tokens

    from app.capture.resize import fit_frame
    from app.engine.session import ProactiveSession, SessionConfig
    from app.eval.runner import video_source

    seen = []

    class Spy:
        name, device = "spy", "cpu"

        def reset(self, system_prompt):
            pass

        def step(self, images, text="", **kw):
            from app.engine.backend import BackendStep

            seen.append(images)
            return BackendStep(protocol.NO_REPLY, True)

        def close(self):
            pass

    s = ProactiveSession(Spy(), SessionConfig(interval=1.0, frames_per_turn=2, tokens_per_frame=16))
    with video_source(path) as src:
        list(s.run(src))
    assert len(seen) == len(turns)
    for a, b in zip(seen, turns, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b.images, strict=True))
    # …and they are fit_frame's output at 16 tokens for the frame decoded at t = 1 s
    with video_source(path) as src:
        first = next(iter(src.sample(1.0)))
    assert first.time == 1.0
    assert np.array_equal(fit_frame(first.image, 16), turns[0].images[0])


def test_answer_at_end_of_span_and_questions_where_session_puts_them():
    times = [2.0, 4.0, 6.0, 8.0]
    assert answer_turn(times, (3.5, 6.5)) == 2  # turns 4 and 6 are in the span: the last one
    assert answer_turn(times, (2.5, 5.5)) == 1
    assert answer_turn(times, (4.2, 5.8)) == 2  # no turn inside: first turn after the start
    frames = [TurnFrames(t, []) for t in times]
    ex = Example("e", "v", (UserText(3.0, "Q1"), UserText(0.0, "Q0")),
                 (GoldAnswer("a1", (2.5, 5.5), question=0), GoldAnswer("a0", (6.5, 9.0), question=1)))
    d = dialogue_from_example(ex, frames)
    assert [t.user_text for t in d.turns] == ["Q0", "Q1", "", ""]
    # a1 belongs to Q1 (asked at turn 4): its answer sits at 4; a0 at 8
    assert [t.target for t in d.turns] == [protocol.NO_REPLY, "a1", protocol.NO_REPLY, "a0"]


def test_nqna_folds_earlier_answers_into_the_immediate_answer():
    frames = [TurnFrames(t, []) for t in (2.0, 4.0, 6.0, 8.0)]
    ex = Example("e", "v", (UserText(0.0, "Q"),), (GoldAnswer("a", (1.5, 4.5)), GoldAnswer("b", (3.5, 6.5))))

    class Late:
        def integers(self, lo, hi):
            return 2  # the question moves to turn 6

    d = dialogue_from_example(ex, frames, nqna=True, rng=Late())  # type: ignore[arg-type]
    assert [t.user_text for t in d.turns] == ["", "", "Q", ""]
    assert d.turns[2].target == "a b"  # both earlier answers, at the question's turn
    assert d.turns[0].target == d.turns[1].target == protocol.NO_REPLY


def test_malformed_dataset_names_record_and_field(tmp_path):
    bad = tmp_path / "d.jsonl"
    bad.write_text(json.dumps({"id": "r1", "video": "v.avi", "questions": [{"time": "x", "text": "Q"}],
                               "answers": []}) + "\n")
    with pytest.raises(DataError, match=r"r1.*questions\[0\]\.time"):
        load_examples(bad)


def test_unreadable_video_is_named(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="junk.avi"):
        read_turn_frames(junk, 1.0, 2, 16, "record 'r': ")
    with pytest.raises(DataError, match="file not found"):
        read_turn_frames(tmp_path / "missing.avi", 1.0, 2, 16)


def test_a_stage_evaluates_on_the_first_eval_limit_heldout_examples() -> None:
    held = [Example(id=f"heldout/{k}", video=f"{k}.mp4", questions=(), answers=()) for k in range(5)]
    src = Sources(train=[], feedback=[], heldout=Dataset(held), frames={})
    assert [ex.id for ex in heldout_subset(src, 2)] == ["heldout/0", "heldout/1"]
    assert len(heldout_subset(src, 0)) == 5 and len(heldout_subset(src, 9)) == 5  # 0: all of them
