"""Dataset layouts: ProactiveVideoQA and Duet JSONL, round trips, and errors that name record and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.eval.dataset import DatasetError, Example, GoldAnswer, UserText, load_dataset, write_dataset

# Shaped like the released anno.json records (docs §3.1), a TV record with a subtitle turn.
PVQA = [{
    "video": "tv/clip1.mp4", "question_id": "clip1.mp4%Q1", "duration": 60.5,
    "conversation": [{"role": "user", "time": 0, "content": "What is Amber doing?"},
                     {"role": "user", "time": 0.352, "content": "Subtitle: (Amber:) Hello."}],
    "answer": [{"role": "assistant", "content": "She waves.", "related_timespan": [3.0, 7.0],
                "reply_timespan": [3.0, 8.0], "type": "step"}],
    "tag": "TV",
}]


def test_reads_proactivevideoqa_records(tmp_path: Path) -> None:
    p = tmp_path / "tv-proactivevideoqa_format.json"
    p.write_text(json.dumps(PVQA))
    ds = load_dataset(p, video_root=tmp_path / "videos")
    (ex,) = ds.examples
    assert ds.layout == "pvqa" and ex.id == "clip1.mp4%Q1" and ex.task == "TV"
    assert [q.time for q in ex.questions] == [0.0, 0.352]
    assert ex.question_for(ex.answers[0]) == "What is Amber doing?"  # the first user turn
    assert ex.answers[0].reply_span == (3.0, 8.0) and ex.answers[0].related_span == (3.0, 7.0)
    assert ex.answers[0].meta == {"type": "step"}
    assert ex.video_path == tmp_path / "videos" / "tv" / "clip1.mp4"


def test_round_trip_between_layouts(tmp_path: Path) -> None:
    ex = Example("e1", "v.avi", (UserText(0.0, "Q?"), UserText(4.0, "Q2?")),
                 (GoldAnswer("A.", (1.5, 4.5), (1.5, 3.5)), GoldAnswer("B.", (6.0, 9.0), None, 1)),
                 duration=10.0, task="t", meta={"k": 1})
    back = load_dataset(write_dataset([ex], tmp_path / "d.jsonl")).examples[0]
    assert back == ex and back.meta == {"k": 1} and back.video_path == tmp_path / "v.avi"
    # ProactiveVideoQA has one question per record: a record judging against question 1 is refused
    with pytest.raises(DatasetError, match="record 'e1'.*answers"):
        write_dataset([ex], tmp_path / "d.json")
    single = Example("e2", "v.avi", (UserText(0.0, "Q?"),), (GoldAnswer("A.", (1.5, 4.5), (1.5, 3.5)),), 10.0, "t")
    assert load_dataset(write_dataset([single], tmp_path / "d.json")).examples[0] == single


def bad_jsonl(tmp_path: Path, *records: object) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return p


GOOD = {"id": "ok", "video": "v.avi", "questions": [{"time": 0, "text": "Q?"}],
        "answers": [{"text": "A.", "reply_span": [1, 4]}]}


def test_malformed_records_name_the_record_and_field(tmp_path: Path) -> None:
    p = bad_jsonl(
        tmp_path,
        GOOD,
        {**GOOD, "id": "no-span", "answers": [{"text": "A."}]},
        {**GOOD, "id": "backwards", "answers": [{"text": "A.", "reply_span": [5, 2]}]},
        {**GOOD, "id": "bad-q", "answers": [{"text": "A.", "reply_span": [1, 2], "question": 3}]},
        {**GOOD, "id": "neg-time", "questions": [{"time": -1, "text": "Q?"}]},
        "{not json",
        {**GOOD, "id": "ok"},
        {k: v for k, v in GOOD.items() if k != "video"} | {"id": "no-video"},
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(p)
    msg = str(err.value)
    assert "line 2 (id 'no-span'): field 'answers[0].reply_span'" in msg
    assert "line 3 (id 'backwards'): field 'answers[0].reply_span': end 2.0 is before start 5.0" in msg
    assert "(id 'bad-q'): field 'answers[0].question'" in msg
    assert "(id 'neg-time'): field 'questions[0].time'" in msg
    assert "line 6: not valid JSON" in msg
    assert "record 'ok': field 'id': duplicate id" in msg
    assert "(id 'no-video'): field 'video'" in msg


def test_malformed_pvqa_record(tmp_path: Path) -> None:
    rec = json.loads(json.dumps(PVQA[0]))
    rec["answer"][0]["reply_timespan"] = "3-8"
    rec2 = {**PVQA[0], "question_id": "q2", "conversation": []}
    p = tmp_path / "x.json"
    p.write_text(json.dumps([rec, rec2]))
    with pytest.raises(DatasetError) as err:
        load_dataset(p)
    assert "record 0 (question_id 'clip1.mp4%Q1'): field 'answer[0].reply_timespan'" in str(err.value)
    assert "record 1 (question_id 'q2'): field 'conversation'" in str(err.value)


def test_file_level_problems(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(tmp_path / "d.txt")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="no records"):
        load_dataset(tmp_path / "e.jsonl")
    (tmp_path / "f.json").write_text('{"a": ')
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(tmp_path / "f.json")
    with pytest.raises(DatasetError, match="no dataset.jsonl"):
        load_dataset(tmp_path)


def test_missing_videos_are_listed_by_record(tmp_path: Path) -> None:
    (tmp_path / "here.avi").write_bytes(b"x")
    p = bad_jsonl(tmp_path, {**GOOD, "id": "a", "video": "here.avi"}, {**GOOD, "id": "b", "video": "gone.avi"})
    ds = load_dataset(p)
    assert [e.id for e in ds.missing_videos()] == ["b"]
    with pytest.raises(DatasetError, match=r"record 'b': field 'video': file not found: .*gone\.avi"):
        ds.check_videos()
