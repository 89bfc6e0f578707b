"""Fault catalogue, part 2: saved sessions damaged on disk, their privacy, and late gold data.

A damaged record is skipped and reported once; a damaged meta.json is set aside; nothing stops the
browser, the exports or the trainer's reader.
"""

from __future__ import annotations

import json
import logging
import stat

import numpy as np
import pytest

from app.core.session_export import export_json, export_markdown
from app.core.sessions import SessionStore, load_session, sessions_with_feedback
from app.core.types import Frame, StepResult, StepTimings


def _session(root, n: int = 3):
    store = SessionStore(root)
    w = store.create({"source": "file:x.mp4", "model": "tiny"}, durable=False)
    img = np.zeros((24, 32, 3), dtype=np.uint8)
    for t in range(n):
        w.add_step(StepResult(turn=t, video_time=float(t + 1), silent=t != 1, text="a reply" if t == 1 else "",
                              frames=[Frame(image=img, time=float(t + 1), index=t, source="x")],
                              timings=StepTimings(total_ms=1.0)))
    w.add_feedback(1, "wrong")
    w.close()
    return store, w.directory


def _append(directory, *lines: str | bytes) -> None:
    with open(directory / "events.jsonl", "ab") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else line.encode()) + b"\n")


DAMAGED_RECORDS = {
    "feedback without turn": '{"type": "feedback", "kind": "wrong"}',
    "feedback with a string turn": '{"type": "feedback", "turn": "1", "kind": "wrong"}',
    "feedback of an unknown kind": '{"type": "feedback", "turn": 1, "kind": "lovely"}',
    "step without turn": '{"type": "step", "time": 1.0, "text": "x", "silent": false}',
    "step with numeric text": '{"type": "step", "turn": 9, "time": 1.0, "text": 5, "silent": false}',
    "step with a NaN time": '{"type": "step", "turn": 9, "time": NaN, "text": "x", "silent": false}',
    "step pointing outside thumbs/": '{"type": "step", "turn": 9, "time": 1, "text": "x", "silent": false, '
                                     '"thumb": "../../../etc/passwd"}',
    "a JSON array": "[1, 2, 3]",
    "a bare number": "42",
    "a record without type": '{"turn": 1}',
    "a cut-off line": '{"type": "step", "turn": 4, "ti',
    "invalid UTF-8": b'{"type": "question", "text": "\xff\xfe"',
}


@pytest.mark.parametrize("case", DAMAGED_RECORDS)
def test_a_damaged_record_is_skipped_and_reported_once(case, tmp_path, caplog):
    store, d = _session(tmp_path / "sessions")
    _append(d, DAMAGED_RECORDS[case])
    with caplog.at_level(logging.WARNING, logger="duet.sessions"):
        s = load_session(d)
        again = next(store.sessions())
    assert s.damaged_lines == 1 and again.damaged_lines == 1
    assert s.problem == "1 damaged record(s) skipped"
    assert [r.getMessage() for r in caplog.records] == [f"session {d}: 1 damaged record(s) skipped"]
    assert len(s.steps) == 3 and s.feedback == {1: {"wrong"}} and s.ended == "stopped"
    assert "a reply" in export_markdown(s) and json.loads(export_json(s))["id"] == d.name
    assert [m.kind for m in sessions_with_feedback(store)[0].marks] == ["wrong"]


META_CASES = {
    "a 0xFF byte": b'{"source": "\xff"}',
    "not JSON": b"{",
    "a list": b"[]",
    "empty": b"",
}


@pytest.mark.parametrize("case", META_CASES)
def test_a_damaged_meta_json_is_set_aside(case, tmp_path, caplog):
    _, d = _session(tmp_path / "sessions")
    (d / "meta.json").write_bytes(META_CASES[case])
    with caplog.at_level(logging.WARNING, logger="duet.sessions"):
        s = load_session(d)
    assert {k: v for k, v in s.meta.items() if k != "format"} == {"id": d.name}  # "format": migrated in memory
    assert s.problem.startswith("meta.json is damaged") and "set aside as meta.corrupt-" in s.problem
    assert [p.read_bytes() for p in d.glob("meta.corrupt-*.json")] == [META_CASES[case]]
    assert len(s.steps) == 3  # the transcript itself is intact
    assert s.title.endswith("· ?") and "Source: `?`" in export_markdown(s)
    assert len(caplog.records) == 1


def test_wrong_typed_meta_fields_are_dropped_not_fatal(tmp_path):
    _, d = _session(tmp_path / "sessions")
    (d / "meta.json").write_text(json.dumps({"id": d.name, "started": "yesterday", "source": ["x"], "model": 3}))
    s = load_session(d)
    assert s.title.startswith("1970-01-01") or s.title.startswith("1969-12-31")
    assert "Model: `?`" in export_markdown(s)


def test_sessions_are_private(tmp_path):
    _, d = _session(tmp_path / "sessions")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(d.parent) == 0o700 and mode(d) == 0o700 and mode(d / "thumbs") == 0o700
    files = [d / "meta.json", d / "events.jsonl", *(d / "thumbs").iterdir()]
    assert len(files) == 3
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_open_sessions_folder_is_made_private(tmp_path):
    root = tmp_path / "sessions"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    _session(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_eval_warns_about_gold_beyond_the_video(tmp_path):
    from app.eval.dataset import Example, GoldAnswer, UserText
    from app.eval.runner import beyond_end_warning

    ex = Example("e1", "v.mp4", (UserText(2.0, "q"), UserText(95.0, "late q")),
                 (GoldAnswer("a", (3.0, 4.0)), GoldAnswer("b", (120.0, 130.0)), GoldAnswer("c", (80.5, 81.0))))
    assert beyond_end_warning(ex, 80.0, 1.0) == (
        "example e1: 1 gold answer span(s) and 1 question(s) start after the video ends (80.0 s watched); "
        "they cannot be met — wrong timestamps or the wrong video?")
    assert beyond_end_warning(ex, 200.0, 1.0) is None


def test_training_warns_about_answers_beyond_the_video(caplog):
    from app.eval.dataset import Example, GoldAnswer, UserText
    from app.trainer.data import TurnFrames, dialogue_from_example

    frames = [TurnFrames(float(t), [np.zeros((28, 28, 3), dtype=np.uint8)]) for t in (1, 2, 3)]
    ex = Example("late-1", "v.mp4", (UserText(1.0, "q"),),
                 (GoldAnswer("seen", (2.0, 2.5)), GoldAnswer("never", (50.0, 60.0))))
    with caplog.at_level(logging.WARNING, logger="duet.trainer.data"):
        d = dialogue_from_example(ex, frames)
        dialogue_from_example(ex, frames)  # reported once
    assert [t.target for t in d.turns].count("seen") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "record 'late-1': 1 answer(s) and 0 question(s) fall after the video's last turn (3.0 s) and are left "
        "out of training; check their timestamps and the video"]
