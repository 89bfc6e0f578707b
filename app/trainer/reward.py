"""MMDuet2's GRPO reward, ``pauc_reward_function``, reproduced quirk for quirk (docs/protocol.md §2.5, §4.3).

    r = 3·r_PAUC + 2·r_rep + 0.5·r_in_span + 2·r_pfx        (range about [−4.5, 3])

* r_PAUC: mean over the non-truncated gold spans of the area ratio of the step curve through the
  (time − start, score) points of the span's distinct in-span replies, each judged *alone* on the
  5-point scale minus one (S = 4), ω = 0.5 built in, start score 0.5; a span without a point
  scores 0.5/4 = 0.125 (not the eval's 0.25).
* r_rep: −mean of a list of repetition verdicts: exact duplicates of any earlier reply (or of
  ``prev`` replies) count 1; other replies get the judge's yes/no against everything said before;
  and — the quirk — the 2nd and later distinct replies inside one span have their verdict appended
  a *second* time.
* r_in_span: −(replies outside every span) / (turns outside every span) — divided by *turns*.
* r_pfx: −(turns whose text shares a ≥ 50-character prefix with an earlier turn or a ``prev`` reply)
  / (all turns), NO REPLY turns included in both.

More quirks kept: dedup is by exact string; a judge failure (None) is silently left out; judge
results are keyed by *time*, so when spans overlap the later span's score overwrites the earlier
one's; spans starting after the last rollout timestamp are skipped.

The judge is pluggable (:class:`RewardJudge`); :class:`EvalJudgeReward` adapts the evaluation
judges (0/1/2 → 0/2/4, failure → None) so the synthetic sets use the exact-match judge and real
data the overlap or LLM judge.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.core.protocol import NO_REPLY
from app.eval.pauc import area_under_line_ratio

MAX_SCORE = 4  # the reward judge's 5-point scale minus one
START_SCORE = 0.5
OMEGA = 0.5
PREFIX_CHARS = 50


class RewardJudge(Protocol):
    def similarity(self, question: str, gold: str, prediction: str) -> int | None:
        """0..4, or None when the judge fails (the item is then left out, as in the original)."""

    def repetition(self, previous: str, new: str) -> bool | None:
        """Whether ``new`` adds nothing to ``previous`` (the space-joined earlier replies), or None."""


class EvalJudgeReward:
    """An ``app.eval.judges`` judge (0..2, raises JudgeError) as a reward judge (0..4, None on failure).

    The factor 2 keeps the reward's S = 4 range: "mostly covered" (2) maps to 4, like the 5-point
    judge's "fully covered". ``previous`` strings are split back into the distinct replies they joined.
    """

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self.id = f"reward:{judge.id}"
        self._prev: list[str] = []

    def similarity(self, question: str, gold: str, prediction: str) -> int | None:
        from app.eval.judges import JudgeError

        try:
            return 2 * int(self.judge.score(question, gold, prediction))
        except JudgeError:
            return None

    def repetition(self, previous: str, new: str) -> bool | None:
        from app.eval.judges import JudgeError

        try:
            return bool(self.judge.is_repetition(self._prev_list(previous), new))
        except JudgeError:
            return None

    def _prev_list(self, previous: str) -> list[str]:
        return [previous] if previous else []


@dataclass(frozen=True)
class GoldSpan:
    content: str
    question: str
    span: tuple[float, float]


@dataclass
class RewardParts:
    pauc: float
    rep: float
    in_span: float
    pfx: float
    total: float
    n_replies: int = 0
    span_paucs: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "pauc": self.pauc, "rep": self.rep, "in_span": self.in_span, "pfx": self.pfx,
                "replies": self.n_replies}


@dataclass(frozen=True)
class Weights:
    """The run scripts' values (§2.5): PAUC 3 (default), repetition 2, out-of-span 0.5, prefix 2."""

    pauc: float = 3.0
    rep: float = 2.0
    in_span: float = 0.5
    pfx: float = 2.0


_ASSISTANT = re.compile(r"(?<=assistant\n)(.*?)(?=\nuser|$)", re.DOTALL)


def parse_response(solution: str) -> list[str]:
    """The original's parser over verl's decoded rollout text ("NO REPLY\\nuser\\n…\\nassistant\\n…")."""
    if not solution.startswith("assistant\n"):
        solution = "assistant\n" + solution
    if not solution.endswith("\nuser"):
        solution = solution + "\nuser"
    return [m.strip() for m in _ASSISTANT.findall(solution)]


def common_prefix_len(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def pauc_reward(timestamps: Sequence[float], replies: Sequence[str], gold: Sequence[GoldSpan], judge: RewardJudge,
                prev_replies: Sequence[str] = (), weights: Weights = Weights(),
                prefix_chars: int = PREFIX_CHARS) -> RewardParts:
    """The reward of one rollout segment. ``replies[i]`` is the assistant text at ``timestamps[i]``."""
    pred = list(zip(timestamps, replies, strict=False))  # zip truncates to the shorter, as the original
    prev = list(prev_replies)
    t_last = timestamps[-1] if len(timestamps) else float("-inf")

    # 1. repetition requests (REPETITION_IN_ALL_SPANS=1): every new distinct reply vs all before it
    rep_result: dict[float, bool | None] = {}
    seen = list(prev)
    for t, r in pred:
        if r == NO_REPLY or r in seen:
            continue
        seen.append(r)
        rep_result[t] = judge.repetition(" ".join(seen[:-1]), r)

    # 2. common-prefix flags over every turn (NO REPLY included), against earlier turns and prev
    flags = []
    for i, (_, r) in enumerate(pred):
        earlier = [x for _, x in pred[:i]] + prev
        flags.append(1 if any(common_prefix_len(p, r) >= prefix_chars for p in earlier) else 0)
    r_pfx = -sum(flags) / len(flags) if flags else 0.0

    # 3. in-span sets and similarity requests (keyed by time: overlapping spans overwrite)
    sim_result: dict[float, int | None] = {}
    inspan_times: set[float] = set()
    live: list[GoldSpan] = []
    for g in gold:
        s, e = g.span
        if s > t_last:
            continue  # truncated away
        live.append(g)
        seen_here: list[str] = []
        for t, r in pred:
            if s <= t <= e:
                inspan_times.add(t)
                if r == NO_REPLY or r in seen_here:
                    continue
                seen_here.append(r)
                sim_result[t] = judge.similarity(g.question, g.content, r)

    # 4. out-of-span false alarms, over out-of-span *turns*
    out_turns = [(t, r) for t, r in pred if t not in inspan_times]
    out_replies = [r for _, r in out_turns if r != NO_REPLY]
    r_in_span = -len(out_replies) / len(out_turns) if out_turns else 0.0

    # 6. repetition list: exact duplicates count 1, else the verdict (None left out)
    rep_list: list[float] = []
    seen = list(prev)
    for t, r in pred:
        if r == NO_REPLY:
            continue
        if r in seen:
            rep_list.append(1.0)
            continue
        seen.append(r)
        v = rep_result.get(t)
        if v is not None:
            rep_list.append(float(v))

    # 7. PAUC per span (+ the double-counted verdicts of 2nd+ distinct in-span replies)
    paucs: list[float] = []
    for g in live:
        s, e = g.span
        points: list[tuple[float, float]] = []
        distinct: list[str] = []
        for t, r in pred:
            if not s <= t <= e or r == NO_REPLY or r in distinct:
                continue
            distinct.append(r)
            if len(distinct) > 1:
                v = rep_result.get(t)
                if v is not None:
                    rep_list.append(float(v))
            score = sim_result.get(t)
            if score is not None:
                points.append((t - s, float(score)))
        paucs.append(area_under_line_ratio(points, e - s, MAX_SCORE, OMEGA, START_SCORE))
    r_pauc = sum(paucs) / len(paucs) if paucs else 0.0
    r_rep = -sum(rep_list) / len(rep_list) if rep_list else 0.0

    total = weights.pauc * r_pauc + weights.rep * r_rep + weights.in_span * r_in_span + weights.pfx * r_pfx
    n_rep = sum(1 for _, r in pred if r != NO_REPLY)
    return RewardParts(r_pauc, r_rep, r_in_span, r_pfx, total, n_rep, tuple(paucs))


def gold_spans(example: Any) -> list[GoldSpan]:
    """An eval ``Example``'s answers as reward spans (question text = the answer's question)."""
    return [GoldSpan(a.text, example.question_for(a), (float(a.reply_span[0]), float(a.reply_span[1])))
            for a in example.answers]
