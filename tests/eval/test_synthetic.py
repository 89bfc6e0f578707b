"""Synthetic proactive videos: reproducible, one visible event per reply span, templated answers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from app.eval.cli import main
from app.eval.dataset import load_dataset
from app.eval.judges import ExactMatchJudge
from app.eval.synthetic import (
    DIFFICULTIES,
    FAMILIES,
    QUESTIONS,
    SyntheticConfig,
    generate,
    make_synthetic,
    make_video,
)

TEMPLATES = {
    "appear": r"A (red|green|blue|yellow) (circle|square|triangle) appeared\.",
    "colour": r"The (circle|square|triangle) turned (red|green|blue|yellow)\.",
    "move": r"The (circle|square|triangle) moved (left|right|up|down)\.",
    "count": r"There (is 1 shape|are [2-9] shapes)\.",
    "text": r"The word [A-Z]{3} appeared\.",
}


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_scripts_are_well_formed(difficulty: str) -> None:
    lo, hi = {"easy": (1, 2), "medium": (2, 3), "hard": (3, 4)}[difficulty]
    for family in FAMILIES:
        for i in range(4):
            v = make_video(family, difficulty, i, seed=3)
            ex = v.example("x.avi")
            assert ex.questions[0].text == QUESTIONS[family] and ex.meta["templated"]
            assert lo <= len(ex.answers) <= hi
            prev_end = -1.0
            for a in ex.answers:
                s, e = a.reply_span
                assert s % 1 == 0.5 and s >= ex.questions[0].time + 1.5  # between whole-second samples
                assert e <= v.duration and a.related_span and a.related_span[1] <= e
                assert s >= prev_end  # spans never overlap
                prev_end = e
                assert re.fullmatch(TEMPLATES[family], a.text), a.text
                assert ExactMatchJudge().score("", a.text, a.text) == 2
            texts = [a.text for a in ex.answers]
            if family != "move":  # a shape may move the same way twice; otherwise each event says something new
                assert all(x != y for x, y in zip(texts, texts[1:], strict=False)), texts


@pytest.mark.parametrize("family", FAMILIES)
def test_each_event_is_visible_and_nothing_else_changes(family: str) -> None:
    for difficulty in ("easy", "medium"):
        v = make_video(family, difficulty, 1, seed=5)
        times = [ev.time for ev in v.events]
        for t in times:
            assert diff(v.frame_at(t - 0.4), v.frame_at(t + 0.6)) > 1.0, (v.id, t)
        quiet = [t for t in np.arange(0.0, v.duration - 1, 0.5) if not any(t <= o <= t + 1 for o in times)]
        for t in quiet:
            assert diff(v.frame_at(t), v.frame_at(t + 1)) == 0.0, (v.id, t)


def test_hard_has_a_moving_distractor_between_events() -> None:
    v = make_video("appear", "hard", 0)
    assert diff(v.frame_at(0.1), v.frame_at(1.1)) > 0  # something moves, yet no gold answer there
    assert v.events[0].time >= 1.5


def test_same_seed_same_bytes_other_seed_other_videos(tmp_path: Path) -> None:
    cfg = SyntheticConfig(families=("appear", "text"), per_family=1)
    a = make_synthetic(tmp_path / "a", cfg)
    b = make_synthetic(tmp_path / "b", cfg)
    assert (tmp_path / "a/dataset.jsonl").read_bytes() == (tmp_path / "b/dataset.jsonl").read_bytes()
    for ea, eb in zip(a, b, strict=True):
        assert ea.video_path and eb.video_path
        assert ea.video_path.read_bytes() == eb.video_path.read_bytes()
    other = generate(SyntheticConfig(families=("appear", "text"), per_family=1, seed=1))
    assert [v.example("x").answers for v in other] != [e.answers for e in a]


def test_make_synthetic_cli_writes_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "set"
    rc = main(["make-synthetic", str(out), "--families", "count,move", "--difficulty", "easy,hard",
               "--per-family", "1", "--size", "84", "--layout", "both", "--codec", "mp4v"])
    assert rc == 0
    jsonl, pvqa = load_dataset(out / "dataset.jsonl"), load_dataset(out / "dataset.json")
    assert len(jsonl) == 4 and [e.id for e in jsonl] == [e.id for e in pvqa]
    assert all(e.video_path and e.video_path.suffix == ".mp4" and e.video_path.stat().st_size > 0 for e in jsonl)
    assert pvqa.examples[0].answers == jsonl.examples[0].answers


def test_bad_synthetic_arguments() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        make_video("juggle", "easy", 0)
    with pytest.raises(ValueError, match="difficulty"):
        make_video("appear", "brutal", 0)
    with pytest.raises(ValueError, match="duration"):
        make_video("appear", "easy", 0, duration=3)
