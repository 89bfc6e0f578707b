"""PAUC, the ProactiveVideoQA metric, as pure arithmetic (docs/protocol.md §3.2).

Nothing here calls a judge: a gold answer turn arrives with its judged points ``(time, score)`` and
leaves with its PAUC. Keeping the arithmetic apart from judging is what lets the tests check the
metric from first principles (the paper's worked example) and lets a rerun with another judge reuse
the same code.

The definition, per gold reply turn with reply span ``[s, e]``:

* The model's distinct in-span replies are judged *cumulatively*: the p-th point's score rates the
  concatenation of the first p distinct replies, on 0 (incorrect) … 2 (mostly covered).
* Post-processing: walking the points in time order, remember the last score at or before the end
  of the *related* span; a later point (in the reply span's grace tail) that scores lower than it is
  deleted, because it is probably about the next gold turn.
* The curve is a step function starting at score 0.5 at ``s``; each point's x is shrunk towards
  ``s`` by ``(1 - ω)``; the area under it up to ``e`` is divided by ``(e - s) · 2``.
* A turn with no scored point scores ``0.5 / 2 = 0.25``.
* The dataset score is the mean over all gold turns (turn-weighted, not per video).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MAX_SCORE = 2  # the 3-point judge's 1..3 minus one
START_SCORE = 0.5  # so that a wrong first reply (0) is worse than saying nothing
OMEGAS: tuple[float, ...] = (0.0, 0.5, 1.0)
HEADLINE_OMEGA = 0.5

Point = tuple[float, float]  # (time, score)


def area_under_line_ratio(
    points: Sequence[Point],
    max_x: float,
    max_y: float = MAX_SCORE,
    omega: float = HEADLINE_OMEGA,
    start_score: float = START_SCORE,
) -> float:
    """Normalised area under the step curve through ``points`` (x relative to the span start).

    Same arithmetic as ProactiveVideoQA's ``area_under_line_ratio``: x ← x·(1 − ω), append
    ``(max_x, y_last)``, step area from ``(0, start_score)``, divide by ``max_x · max_y``. Two edge
    cases the original leaves undefined are defined here: no points gives ``start_score / max_y``
    (what the original's caller substitutes), and a zero-length span gives ``y_last / max_y``
    (the limit of the formula as the span shrinks), instead of a division by zero.
    """
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must be within [0, 1], got {omega}")
    if max_x < 0 or max_y <= 0:
        raise ValueError(f"need max_x >= 0 and max_y > 0, got max_x={max_x}, max_y={max_y}")
    for x, y in points:
        if not -1e-9 <= x <= max_x + 1e-9:
            raise ValueError(f"point x={x} lies outside the span [0, {max_x}]")
        if not 0 <= y <= max_y:
            raise ValueError(f"point score {y} lies outside [0, {max_y}]")
    if not points:
        return start_score / max_y
    ordered = sorted(points, key=lambda p: p[0])
    if max_x == 0:
        return ordered[-1][1] / max_y
    shifted = [(x * (1.0 - omega), y) for x, y in ordered]
    shifted.append((max_x, shifted[-1][1]))
    area, prev_x, prev_y = 0.0, 0.0, start_score
    for x, y in shifted:
        area += (x - prev_x) * prev_y
        prev_x, prev_y = x, y
    return area / (max_x * max_y)


def drop_later_lower(points: Sequence[Point], related_end: float | None) -> tuple[list[Point], list[Point]]:
    """The post-processing rule: returns ``(kept, dropped)``, both in time order.

    Walk the points in time order, remembering the last score at or before ``related_end`` (0 until
    one is seen). A point after ``related_end`` whose score is lower than the remembered one is
    dropped; such a reply falls in the grace second(s) of the reply span and is more likely about
    the next gold turn. Points after ``related_end`` never update the remembered score, and a turn
    with at most one point, or without a related span, is left alone, exactly as in the original.
    """
    ordered = sorted(points, key=lambda p: p[0])
    if len(ordered) <= 1 or related_end is None:
        return ordered, []
    kept: list[Point] = []
    dropped: list[Point] = []
    last_in_related = 0.0
    for t, score in ordered:
        if t <= related_end:
            last_in_related = score
            kept.append((t, score))
        elif score < last_in_related:
            dropped.append((t, score))
        else:
            kept.append((t, score))
    return kept, dropped


@dataclass(frozen=True)
class TurnPAUC:
    """One gold turn's result: the points that counted, those post-processing removed, PAUC per ω."""

    kept: tuple[Point, ...]
    dropped: tuple[Point, ...]
    pauc: Mapping[float, float]


def turn_pauc(
    points: Sequence[Point],
    reply_span: tuple[float, float],
    related_end: float | None = None,
    omegas: Iterable[float] = OMEGAS,
    max_score: float = MAX_SCORE,
    start_score: float = START_SCORE,
) -> TurnPAUC:
    """PAUC of one gold turn from its judged points in absolute video time."""
    start, end = reply_span
    if end < start:
        raise ValueError(f"reply span ends before it starts: {reply_span}")
    for t, _ in points:
        if not start - 1e-9 <= t <= end + 1e-9:
            raise ValueError(f"point at t={t} lies outside the reply span {reply_span}")
    kept, dropped = drop_later_lower(points, related_end)
    rel = [(t - start, s) for t, s in kept]
    values = {float(w): area_under_line_ratio(rel, end - start, max_score, w, start_score) for w in omegas}
    return TurnPAUC(tuple(kept), tuple(dropped), values)


def in_span(time: float, span: tuple[float, float]) -> bool:
    """Inclusive on both ends, as in the reference code (``s <= t <= e``)."""
    return span[0] <= time <= span[1]


def distinct_in_span(replies: Sequence[tuple[float, str]], span: tuple[float, float]) -> list[tuple[float, str]]:
    """The in-span replies that get judged: time order, exact-string duplicates of earlier ones skipped."""
    seen: set[str] = set()
    out: list[tuple[float, str]] = []
    for t, text in sorted(replies, key=lambda r: r[0]):
        if in_span(t, span) and text not in seen:
            seen.add(text)
            out.append((t, text))
    return out


def cumulative_predictions(distinct: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
    """What the judge sees at each distinct reply: the space-joined replies so far (PVQA §3)."""
    return [(t, " ".join(text for _, text in distinct[: i + 1])) for i, (t, _) in enumerate(distinct)]


def mean_pauc(turns: Sequence[Mapping[float, float]], omegas: Iterable[float] = OMEGAS) -> dict[float, float | None]:
    """Turn-weighted dataset mean per ω (``None`` when there are no turns)."""
    out: dict[float, float | None] = {}
    for w in omegas:
        vals = [t[float(w)] for t in turns]
        out[float(w)] = sum(vals) / len(vals) if vals else None
    return out
