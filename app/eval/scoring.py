"""From gold answers + predictions + a judge to per-turn scores and the dataset summary.

Three phases, so a judge is only ever asked what the arithmetic needs and every verdict is cached:

1. :func:`build_requests`: for each gold turn, the cumulative predictions of its distinct in-span
   replies (PAUC) and the repetition questions for its 2nd and later in-span replies (duplicates).
2. :func:`~app.eval.judges.judge_all` resolves them (cache first).
3. :func:`assemble` turns verdicts into :class:`TurnScore` rows and a :class:`Summary`.

Reported alongside PAUC, as in the MMDuet2 paper (Tables 2 and 6):

* **reply duplicate proportion**: over every gold turn, of the in-span replies after the turn's
  first one, the share that repeat earlier in-span replies (an exact repeat counts without asking
  the judge; otherwise the judge's repetition verdict). How the paper decided "duplicate" is not
  published; this is the documented choice.
* **reply count**: non-silent replies per example; plus the share of replies outside every reply
  span (false alarms), which MMDuet2's in-span reward targets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.eval.dataset import Dataset, Example, GoldAnswer
from app.eval.judges import Judge, JudgeCache, JudgeOutcome, JudgeRequest, judge_all
from app.eval.pauc import OMEGAS, cumulative_predictions, distinct_in_span, in_span, mean_pauc, turn_pauc
from app.eval.predictions import Prediction


@dataclass
class PointRecord:
    time: float
    reply: str  # the distinct reply added at this point
    score: int | None  # None: the judge failed on it
    kept: bool = True  # False: removed by the post-processing rule


@dataclass
class TurnScore:
    example_id: str
    turn: int
    task: str
    question: str
    gold: str
    reply_span: tuple[float, float]
    related_span: tuple[float, float] | None
    points: list[PointRecord]
    pauc: dict[float, float]
    n_in_span: int  # in-span replies including exact repeats
    dup_candidates: int  # in-span replies after the first whose verdict is known
    duplicates: int
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.example_id,
            "turn": self.turn,
            "task": self.task,
            "question": self.question,
            "gold": self.gold,
            "reply_span": list(self.reply_span),
            "related_span": list(self.related_span) if self.related_span else None,
            "points": [{"time": p.time, "reply": p.reply, "score": p.score, "kept": p.kept} for p in self.points],
            "pauc": {str(w): v for w, v in self.pauc.items()},
            "n_in_span": self.n_in_span,
            "dup_candidates": self.dup_candidates,
            "duplicates": self.duplicates,
            "failures": self.failures,
        }


@dataclass
class Summary:
    pauc: dict[float, float | None]
    n_examples: int
    n_turns: int
    n_turns_no_reply: int
    duplicate_proportion: float | None
    duplicates: int
    dup_candidates: int
    replies: int
    replies_per_example: float | None
    out_of_span_replies: int
    judge_failures: int
    examples_without_prediction: list[str]
    examples_with_errors: dict[str, str]
    by_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pauc": {str(w): v for w, v in self.pauc.items()},
            "pauc_percent": {str(w): (round(v * 100, 1) if v is not None else None) for w, v in self.pauc.items()},
            "n_examples": self.n_examples,
            "n_turns": self.n_turns,
            "n_turns_no_reply": self.n_turns_no_reply,
            "duplicate_proportion": self.duplicate_proportion,
            "duplicates": self.duplicates,
            "dup_candidates": self.dup_candidates,
            "replies": self.replies,
            "replies_per_example": self.replies_per_example,
            "out_of_span_replies": self.out_of_span_replies,
            "judge_failures": self.judge_failures,
            "examples_without_prediction": self.examples_without_prediction,
            "examples_with_errors": self.examples_with_errors,
            "by_task": self.by_task,
        }


def _replies(pred: Prediction | None) -> list[tuple[float, str]]:
    return sorted(pred.replies, key=lambda r: r[0]) if pred else []


def _turn_requests(ex: Example, ans: GoldAnswer, replies: Sequence[tuple[float, str]]) -> list[JudgeRequest]:
    q = ex.question_for(ans)
    reqs = [JudgeRequest("score", pred, q, ans.text)
            for _, pred in cumulative_predictions(distinct_in_span(replies, ans.reply_span))]
    inspan = [text for t, text in replies if in_span(t, ans.reply_span)]
    for i in range(1, len(inspan)):
        earlier = inspan[:i]
        if inspan[i] not in earlier:
            reqs.append(JudgeRequest("repetition", inspan[i], previous=tuple(dict.fromkeys(earlier))))
    return reqs


def build_requests(dataset: Dataset, preds: dict[str, Prediction]) -> list[JudgeRequest]:
    """Every judge request the dataset's scores depend on, distinct, in a stable order."""
    reqs: list[JudgeRequest] = []
    for ex in dataset:
        replies = _replies(preds.get(ex.id))
        for ans in ex.answers:
            reqs.extend(_turn_requests(ex, ans, replies))
    return list(dict.fromkeys(reqs))


def score_turn(ex: Example, turn: int, ans: GoldAnswer, replies: Sequence[tuple[float, str]],
               verdicts: JudgeOutcome, omegas: Sequence[float] = OMEGAS) -> TurnScore:
    q = ex.question_for(ans)
    distinct = distinct_in_span(replies, ans.reply_span)
    points: list[PointRecord] = []
    failures: list[str] = []
    for (t, reply), (_, cum) in zip(distinct, cumulative_predictions(distinct), strict=True):
        req = JudgeRequest("score", cum, q, ans.text)
        score = verdicts.values.get(req)
        if score is None:
            failures.append(f"score at t={t}: {verdicts.failures.get(req, 'not judged')}")
        points.append(PointRecord(t, reply, None if score is None else int(score)))
    scored = [(p.time, float(p.score)) for p in points if p.score is not None]
    result = turn_pauc(scored, ans.reply_span, ans.related_span[1] if ans.related_span else None, omegas)
    dropped = set(result.dropped)
    for p in points:
        p.kept = p.score is not None and (p.time, float(p.score)) not in dropped
    inspan = [text for t, text in replies if in_span(t, ans.reply_span)]
    candidates = dups = 0
    for i in range(1, len(inspan)):
        earlier = inspan[:i]
        if inspan[i] in earlier:
            candidates, dups = candidates + 1, dups + 1
            continue
        req = JudgeRequest("repetition", inspan[i], previous=tuple(dict.fromkeys(earlier)))
        verdict = verdicts.values.get(req)
        if verdict is None:
            failures.append(f"repetition of reply {i + 1}: {verdicts.failures.get(req, 'not judged')}")
            continue
        candidates += 1
        dups += int(bool(verdict))
    return TurnScore(ex.id, turn, ex.task, q, ans.text, ans.reply_span, ans.related_span, points,
                     dict(result.pauc), len(inspan), candidates, dups, failures)


def _summarise(dataset: Dataset, preds: dict[str, Prediction], turns: list[TurnScore],
               omegas: Sequence[float]) -> Summary:
    n_replies = 0
    out_of_span = 0
    predicted = [ex for ex in dataset if ex.id in preds]
    for ex in predicted:
        replies = _replies(preds[ex.id])
        n_replies += len(replies)
        out_of_span += sum(1 for t, _ in replies if not any(in_span(t, a.reply_span) for a in ex.answers))
    cand = sum(t.dup_candidates for t in turns)
    dups = sum(t.duplicates for t in turns)
    by_task_turns: dict[str, list[TurnScore]] = defaultdict(list)
    for t in turns:
        by_task_turns[t.task].append(t)
    by_task: dict[str, dict[str, Any]] = {}
    if len(by_task_turns) > 1 or (by_task_turns and "" not in by_task_turns):
        for task, ts in sorted(by_task_turns.items()):
            m = mean_pauc([t.pauc for t in ts], omegas)
            c = sum(t.dup_candidates for t in ts)
            by_task[task or "(none)"] = {
                "n_turns": len(ts),
                "pauc": {str(w): v for w, v in m.items()},
                "duplicate_proportion": (sum(t.duplicates for t in ts) / c) if c else None,
            }
    return Summary(
        pauc=mean_pauc([t.pauc for t in turns], omegas),
        n_examples=len(dataset),
        n_turns=len(turns),
        n_turns_no_reply=sum(1 for t in turns if not any(p.kept for p in t.points)),
        duplicate_proportion=dups / cand if cand else None,
        duplicates=dups,
        dup_candidates=cand,
        replies=n_replies,
        replies_per_example=n_replies / len(predicted) if predicted else None,
        out_of_span_replies=out_of_span,
        judge_failures=sum(len(t.failures) for t in turns),
        examples_without_prediction=[ex.id for ex in dataset if ex.id not in preds],
        examples_with_errors={i: p.error for i, p in preds.items() if p.error},
        by_task=by_task,
    )


@dataclass
class ScoreResult:
    turns: list[TurnScore]
    summary: Summary
    outcome: JudgeOutcome


def score_dataset(
    dataset: Dataset,
    preds: dict[str, Prediction],
    judge: Judge,
    cache: JudgeCache | None = None,
    workers: int = 1,
    omegas: Sequence[float] = OMEGAS,
) -> ScoreResult:
    """Judge what is needed (cache first) and compute every turn's PAUC and the summary.

    An example without a prediction scores as if the model never replied (as in the reference
    scorer) and is listed in ``summary.examples_without_prediction``; judge failures leave the
    affected points out, are listed per turn and counted in ``summary.judge_failures``.
    """
    outcome = judge_all(judge, build_requests(dataset, preds), cache, workers)
    turns = [
        score_turn(ex, i, ans, _replies(preds.get(ex.id)), outcome, omegas)
        for ex in dataset
        for i, ans in enumerate(ex.answers)
    ]
    return ScoreResult(turns, _summarise(dataset, preds, turns, omegas), outcome)
