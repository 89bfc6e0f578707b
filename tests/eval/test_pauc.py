"""PAUC from first principles: the paper's worked example, ω, no reply, duplicates, the post-processing rule."""

from __future__ import annotations

import random

import pytest

from app.eval.pauc import (
    area_under_line_ratio,
    cumulative_predictions,
    distinct_in_span,
    drop_later_lower,
    in_span,
    mean_pauc,
    turn_pauc,
)

# ProactiveVideoQA Fig. 3: span [311, 360]; replies at 312/328/344/352 judged 0/1/2/2.
SPAN = (311.0, 360.0)
POINTS = [(312.0, 0.0), (328.0, 1.0), (344.0, 2.0), (352.0, 2.0)]


def eq1(points: list[tuple[float, float]], span: tuple[float, float], omega: float, start: float = 0.5,
        smax: float = 2.0) -> float:
    """Eq. (1) of the paper written out independently: τ'_p = s + (1 − ω)(τ_p − s)."""
    s, e = span
    if not points:
        return start / smax
    taus = [s + (1 - omega) * (t - s) for t, _ in sorted(points)]
    scores = [y for _, y in sorted(points)]
    area = (taus[0] - s) * start
    for p in range(len(taus) - 1):
        area += (taus[p + 1] - taus[p]) * scores[p]
    area += (e - taus[-1]) * scores[-1]
    return area / ((e - s) * smax)


def test_worked_example_omega_0_is_48_5_over_98() -> None:
    # 1·0.5 + 16·0 + 16·1 + 8·2 + 8·2 = 48.5 ; (360 − 311)·2 = 98
    r = turn_pauc(POINTS, SPAN, related_end=359.0, omegas=(0.0,))
    assert r.pauc[0.0] == pytest.approx(48.5 / 98)
    assert round(r.pauc[0.0], 2) == 0.49


def test_worked_example_omega_half_and_one() -> None:
    r = turn_pauc(POINTS, SPAN, related_end=359.0)
    # ω = 0.5: x' = 0.5, 8.5, 16.5, 20.5 → 0.5·0.5 + 8·0 + 8·1 + 4·2 + (49 − 20.5)·2 = 73.25
    assert r.pauc[0.5] == pytest.approx(73.25 / 98)
    # ω = 1: every point moves to the span start; only the last (cumulative) answer counts.
    assert r.pauc[1.0] == pytest.approx(1.0)
    assert r.pauc[0.0] < r.pauc[0.5] < r.pauc[1.0]


def test_omega_one_is_final_answer_correctness() -> None:
    for last in (0.0, 1.0, 2.0):
        r = turn_pauc([(320.0, 2.0), (340.0, last)], SPAN, omegas=(1.0,))
        assert r.pauc[1.0] == pytest.approx(last / 2)


def test_no_reply_scores_a_quarter_for_every_omega() -> None:
    r = turn_pauc([], SPAN)
    assert r.pauc == {0.0: 0.25, 0.5: 0.25, 1.0: 0.25}


def test_a_wrong_reply_scores_below_silence_and_a_late_right_one_above() -> None:
    wrong = turn_pauc([(311.0, 0.0)], SPAN).pauc
    assert wrong[0.0] == 0.0 and wrong[0.5] == 0.0  # why the curve starts at 0.5, not 0
    late_right = turn_pauc([(360.0, 2.0)], SPAN).pauc
    assert late_right[0.0] == pytest.approx(0.25)  # at the very end: no better than silence when ω = 0
    assert late_right[0.5] == pytest.approx((0.5 * 24.5 + 2 * 24.5) / 98)
    early_right = turn_pauc([(311.0, 2.0)], SPAN).pauc
    assert early_right[0.0] == pytest.approx(1.0)


def test_matches_equation_1_on_random_turns() -> None:
    rng = random.Random(7)
    for _ in range(300):
        s = rng.uniform(0, 100)
        e = s + rng.uniform(0.5, 60)
        n = rng.randint(0, 5)
        pts = sorted({round(rng.uniform(s, e), 3): float(rng.randint(0, 2)) for _ in range(n)}.items())
        for w in (0.0, 0.25, 0.5, 1.0):
            got = area_under_line_ratio([(t - s, y) for t, y in pts], e - s, 2, w, 0.5)
            assert got == pytest.approx(eq1(pts, (s, e), w))
            assert 0.0 <= got <= 1.0


def test_post_processing_drops_a_later_lower_point_in_the_grace_tail() -> None:
    # related span ends at 350; the reply at 355 (grace tail) scores lower than the last in-related one.
    kept, dropped = drop_later_lower([(340.0, 2.0), (355.0, 1.0)], related_end=350.0)
    assert kept == [(340.0, 2.0)] and dropped == [(355.0, 1.0)]
    r = turn_pauc([(340.0, 2.0), (355.0, 1.0)], SPAN, related_end=350.0, omegas=(0.0,))
    assert r.pauc[0.0] == pytest.approx((29 * 0.5 + 20 * 2) / 98)  # as if the 355 reply never happened


def test_post_processing_keeps_equal_or_higher_and_compares_with_the_in_related_score() -> None:
    assert drop_later_lower([(340.0, 1.0), (355.0, 2.0)], 350.0)[1] == []
    assert drop_later_lower([(340.0, 1.0), (355.0, 1.0)], 350.0)[1] == []
    # a post-related point never raises the bar: 358 (score 1) is compared with 340's 1, not 355's 2
    kept, dropped = drop_later_lower([(340.0, 1.0), (355.0, 2.0), (358.0, 1.0)], 350.0)
    assert dropped == [] and len(kept) == 3
    # two lower tail points are both dropped
    assert drop_later_lower([(340.0, 2.0), (352.0, 1.0), (354.0, 0.0)], 350.0)[1] == [(352.0, 1.0), (354.0, 0.0)]


def test_post_processing_boundary_point_exactly_at_the_related_end_counts_as_inside() -> None:
    """"At or before the related end": a point *on* 350 sets the bar, and is never itself dropped."""
    # 350 is in the related span: its score 2 is the bar, so 355 (score 1) is dropped.
    assert drop_later_lower([(340.0, 0.0), (350.0, 2.0), (355.0, 1.0)], 350.0) == (
        [(340.0, 0.0), (350.0, 2.0)], [(355.0, 1.0)])
    # a lower point exactly on the end is in the related span, so it is kept (and lowers the bar).
    assert drop_later_lower([(340.0, 2.0), (350.0, 1.0)], 350.0) == ([(340.0, 2.0), (350.0, 1.0)], [])
    assert drop_later_lower([(340.0, 2.0), (350.0, 1.0), (352.0, 1.0)], 350.0)[1] == []
    # just after the end it is in the grace tail
    assert drop_later_lower([(340.0, 2.0), (350.001, 1.0)], 350.0)[1] == [(350.001, 1.0)]


def test_in_span_includes_both_ends() -> None:
    assert in_span(311.0, SPAN) and in_span(360.0, SPAN) and in_span(330.0, SPAN)
    assert not in_span(310.999, SPAN) and not in_span(360.001, SPAN)


def test_post_processing_leaves_single_points_and_turns_without_related_span() -> None:
    assert drop_later_lower([(355.0, 0.0)], 350.0) == ([(355.0, 0.0)], [])
    assert drop_later_lower([(340.0, 2.0), (355.0, 0.0)], None)[1] == []
    # nothing inside the related span: the remembered score is 0, so nothing can be lower
    assert drop_later_lower([(352.0, 2.0), (355.0, 0.0)], 350.0)[1] == []


def test_duplicates_are_skipped_and_judging_is_cumulative() -> None:
    replies = [(300.0, "early"), (312.0, "A man opens a door."), (320.0, "A man opens a door."),
               (328.0, "He walks in."), (360.0, "He sits."), (361.0, "after the span")]
    distinct = distinct_in_span(replies, SPAN)
    assert [t for t, _ in distinct] == [312.0, 328.0, 360.0]  # inclusive end, exact repeat skipped
    cum = cumulative_predictions(distinct)
    assert cum[-1] == (360.0, "A man opens a door. He walks in. He sits.")
    assert cum[0][1] == "A man opens a door."


def test_points_outside_the_span_and_bad_omega_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        turn_pauc([(361.0, 2.0)], SPAN)
    with pytest.raises(ValueError, match="omega"):
        area_under_line_ratio([(1.0, 1.0)], 10, omega=1.5)
    with pytest.raises(ValueError, match="score"):
        area_under_line_ratio([(1.0, 3.0)], 10)


def test_zero_length_span_uses_the_last_score() -> None:
    assert turn_pauc([(5.0, 1.0)], (5.0, 5.0)).pauc[0.5] == pytest.approx(0.5)
    assert turn_pauc([], (5.0, 5.0)).pauc[0.5] == pytest.approx(0.25)


def test_dataset_mean_is_turn_weighted() -> None:
    video_a = [{0.5: 1.0}, {0.5: 1.0}, {0.5: 1.0}]  # three turns
    video_b = [{0.5: 0.0}]  # one turn
    assert mean_pauc(video_a + video_b, (0.5,))[0.5] == pytest.approx(0.75)  # not (1 + 0) / 2
    assert mean_pauc([], (0.5,))[0.5] is None
