"""The one feedback schema: validation, the last-record-wins rule, v1 migration, and what each kind trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core import feedback as fbk
from app.core.protocol import NO_REPLY
from app.core.sessions import SessionStore, add_mark, load_session
from app.core.types import Frame, StepResult

TIMES = [2.0, 4.0, 6.0, 8.0, 10.0]
SAID = [NO_REPLY, NO_REPLY, "A red circle appeared.", NO_REPLY, "A blue square appeared."]
STEPS = [{"turn": i, "time": t, "silent": s == NO_REPLY, "text": s} for i, (t, s) in enumerate(zip(TIMES, SAID))]


def test_each_kind_changes_exactly_its_turns() -> None:
    def apply(*marks: fbk.Feedback) -> list[str]:
        return fbk.targets(TIMES, SAID, marks)

    assert apply() == SAID
    assert apply(fbk.make("good", 6.0, STEPS)) == SAID
    assert apply(fbk.make("redundant", 10.0, STEPS)) == SAID[:4] + [NO_REPLY]
    assert apply(fbk.make("wrong", 6.0, STEPS)) == SAID[:2] + [NO_REPLY] + SAID[3:]
    fixed = apply(fbk.make("wrong", 6.4, STEPS, text="A red star appeared."))
    assert fixed == SAID[:2] + ["A red star appeared."] + SAID[3:]
    assert apply(fbk.make("late", 6.0, STEPS)) == [NO_REPLY, "A red circle appeared.", NO_REPLY, NO_REPLY,
                                                   SAID[4]]
    assert apply(fbk.make("late", 6.0, STEPS, to_time=1.0)) == ["A red circle appeared."] + [NO_REPLY] * 3 + [SAID[4]]
    missed = apply(fbk.make("missed", 7.5, STEPS, text="Something moved."))
    assert missed == SAID[:3] + ["Something moved."] + SAID[4:]  # the first turn whose time reaches 7.5 s
    # a missed mark on a turn that already speaks joins the texts (as two answers in one turn do)
    assert apply(fbk.make("missed", 10.0, STEPS, text="And a star."))[4] == "A blue square appeared. And a star."


def test_reply_kinds_take_the_nearest_reply_and_missed_needs_text() -> None:
    assert fbk.make("redundant", 9.1, STEPS).turn == 4
    assert fbk.make("redundant", 7.9, STEPS).turn == 2  # 6 is nearer than 10
    assert fbk.make("redundant", 8.0, STEPS).turn == 2  # a tie goes to the earlier reply
    with pytest.raises(fbk.FeedbackError, match="needs the text"):
        fbk.make("missed", 3.0, STEPS)
    with pytest.raises(fbk.FeedbackError, match="takes no text"):
        fbk.make("late", 6.0, STEPS, text="hmm")
    with pytest.raises(fbk.FeedbackError, match="no reply"):
        fbk.make("wrong", 6.0, [s | {"silent": True} for s in STEPS])
    with pytest.raises(fbk.FeedbackError, match="unknown feedback"):
        fbk.make("boring", 6.0, STEPS)
    with pytest.raises(fbk.FeedbackError, match="before the reply"):
        fbk.make("late", 6.0, STEPS, to_time=7.0)


def test_last_record_wins_and_withdrawn_marks_vanish() -> None:
    a = fbk.make("wrong", 6.0, STEPS, text="one")
    b = fbk.make("wrong", 6.0, STEPS, text="two")
    off = fbk.make("redundant", 10.0, STEPS, on=False)
    on = fbk.make("redundant", 10.0, STEPS)
    assert fbk.current([a, b]) == [b]
    assert fbk.current([on, off]) == []
    assert fbk.current([off, on]) == [on]


def _result(turn: int, text: str) -> StepResult:
    img = np.zeros((32, 32, 3), np.uint8)
    return StepResult(turn=turn, video_time=TIMES[turn], text=text, silent=text == NO_REPLY,
                      frames=(Frame(img, time=TIMES[turn]),))


def test_version_1_sessions_are_read_without_rewriting_them(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({"source": "clip.avi"})
    for i, text in enumerate(SAID):
        w.add_step(_result(i, text))
    w.close()
    log = w.directory / "events.jsonl"
    with log.open("a", encoding="utf-8") as fh:  # what Duet wrote before the schema (no time, a free note)
        fh.write(json.dumps({"type": "feedback", "turn": 2, "kind": "late", "on": True, "note": ""}) + "\n")
        fh.write(json.dumps({"type": "feedback", "turn": 4, "kind": "redundant", "on": True, "note": "x"}) + "\n")
        fh.write(json.dumps({"type": "feedback", "turn": 4, "kind": "redundant", "on": False, "note": ""}) + "\n")
        fh.write(json.dumps({"type": "feedback", "turn": 9, "kind": "wrong", "on": True}) + "\n")  # no such turn
    before = log.read_bytes()
    s = load_session(w.directory)
    assert [(m.kind, m.turn, m.time) for m in s.marks] == [("late", 2, 6.0)]
    assert s.feedback == {2: {"late"}, 4: set()}  # a withdrawn mark leaves its turn with no kind on
    assert s.damaged_lines == 1  # the record naming a missing turn is reported, not fatal
    assert log.read_bytes() == before
    add_mark(w.directory, fbk.make("missed", 3.0, s.steps, text="Look, a triangle."))
    s = load_session(w.directory)
    assert [(m.kind, m.text) for m in s.marks] == [("missed", "Look, a triangle."), ("late", "")]
    assert json.loads(log.read_text().splitlines()[-1])["v"] == fbk.SCHEMA_VERSION
