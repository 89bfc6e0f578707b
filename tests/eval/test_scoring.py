"""Scoring a dataset: what the judge is asked, duplicates, reply counts, failures that are reported."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from app.eval.dataset import Dataset, Example, GoldAnswer, UserText
from app.eval.judges import ExactMatchJudge, JudgeError
from app.eval.predictions import Prediction
from app.eval.scoring import score_dataset


class Recording(ExactMatchJudge):
    """Exact match, recording what it was asked; fails on predictions containing 'FAIL'."""

    id = "recording"

    def __init__(self) -> None:
        self.scored: list[str] = []
        self.repeats: list[tuple[tuple[str, ...], str]] = []

    def score(self, question: str, gold: str, prediction: str) -> int:
        self.scored.append(prediction)
        if "FAIL" in prediction:
            raise JudgeError("judge down")
        return super().score(question, gold, prediction)

    def is_repetition(self, previous: Sequence[str], new: str) -> bool:
        self.repeats.append((tuple(previous), new))
        return super().is_repetition(previous, new)


def dataset() -> Dataset:
    a = Example("a", "a.avi", (UserText(0, "What appears?"),), (
        GoldAnswer("A red circle appeared.", (2.0, 5.0), (2.0, 4.0)),
        GoldAnswer("A blue square appeared.", (6.0, 9.0), (6.0, 8.0)),
        GoldAnswer("A green triangle appeared.", (10.0, 13.0), (10.0, 12.0)),
    ), 14.0, "appear")
    b = Example("b", "b.avi", (UserText(0, "What word?"),),
                (GoldAnswer("The word CAT appeared.", (2.0, 5.0), (2.0, 4.0)),), 6.0, "text")
    return Dataset([a, b])


def test_cumulative_judging_duplicates_and_counts() -> None:
    preds = {
        "a": Prediction("a", [
            (2.0, "A blue circle appeared."),   # wrong first: 0
            (3.0, "A blue circle appeared."),   # exact repeat: skipped by PAUC, a duplicate
            (4.0, "A red circle appeared."),    # cumulative "blue… red…" contains the gold: 1
            (6.0, "A blue square appeared."),   # right at once: 2
            (8.0, "a blue square appeared"),    # normalised repeat: judged a duplicate
            (15.0, "Something else."),          # outside every span
        ], n_turns=8),
        "b": Prediction("b", [], n_turns=3),
    }
    judge = Recording()
    res = score_dataset(dataset(), preds, judge)
    t0, t1, t2, tb = res.turns
    assert judge.scored.count("A blue circle appeared. A red circle appeared.") == 1
    assert [(p.time, p.score) for p in t0.points] == [(2.0, 0), (4.0, 1)]
    # ω = 0: 0·… start 0.5 for 0 s, 0 for 2 s, 1 for 1 s → 1 / (3·2)
    assert t0.pauc[0.0] == pytest.approx(1 / 6)
    assert t1.pauc[0.0] == pytest.approx(1.0) and [p.score for p in t1.points] == [2, 2]
    assert t2.pauc == {0.0: 0.25, 0.5: 0.25, 1.0: 0.25} and tb.pauc[0.5] == 0.25
    assert (t0.n_in_span, t0.dup_candidates, t0.duplicates) == (3, 2, 1)
    assert (t1.dup_candidates, t1.duplicates) == (1, 1)
    assert judge.repeats == [(("A blue circle appeared.",), "A red circle appeared."),
                             (("A blue square appeared.",), "a blue square appeared")]
    s = res.summary
    assert s.n_turns == 4 and s.n_turns_no_reply == 2
    assert s.pauc[0.0] == pytest.approx((1 / 6 + 1.0 + 0.25 + 0.25) / 4)
    assert s.duplicate_proportion == pytest.approx(2 / 3) and s.replies == 6
    assert s.replies_per_example == pytest.approx(3.0) and s.out_of_span_replies == 1
    assert s.by_task["appear"]["n_turns"] == 3 and s.by_task["text"]["pauc"]["0.5"] == 0.25
    assert s.judge_failures == 0 and not s.examples_without_prediction


def test_post_processing_is_applied_and_visible_in_points() -> None:
    preds = {"a": Prediction("a", [(3.0, "A red circle appeared."), (5.0, "A blue square appeared.")])}
    res = score_dataset(dataset(), preds, ExactMatchJudge())
    t0 = res.turns[0]
    # at 5.0 (after the related span, within the reply span) the cumulative answer scores 1 < 2: dropped
    assert [(p.time, p.score, p.kept) for p in t0.points] == [(3.0, 2, True), (5.0, 1, False)]
    assert t0.pauc[0.0] == pytest.approx((1 * 0.5 + 2 * 2) / 6)


def test_judge_failures_are_reported_not_dropped_silently() -> None:
    preds = {"b": Prediction("b", [(2.0, "FAIL"), (4.0, "The word CAT appeared.")])}
    res = score_dataset(dataset(), preds, Recording())
    tb = res.turns[3]
    assert [p.score for p in tb.points] == [None, None]  # 2nd cumulative text holds "FAIL" as well
    assert len(tb.failures) == 2 and "judge down" in tb.failures[0]
    assert res.summary.judge_failures == 2 and len(res.outcome.failures) == 2
    assert tb.pauc[0.5] == 0.25  # no verdict, no point: the turn counts as silent and is flagged
    assert res.summary.examples_without_prediction == ["a"]


def test_errors_of_examples_are_carried_to_the_summary() -> None:
    preds = {"a": Prediction("a", [], error="CaptureError: broken"), "b": Prediction("b", [])}
    s = score_dataset(dataset(), preds, ExactMatchJudge()).summary
    assert s.examples_with_errors == {"a": "CaptureError: broken"} and s.duplicate_proportion is None
