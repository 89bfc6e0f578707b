"""Each reward part against hand-computed cases, including the quirks the spec lists (§2.5, §4.3)."""

from __future__ import annotations

import pytest

from app.core.protocol import NO_REPLY
from app.eval.judges import ExactMatchJudge
from app.trainer.reward import EvalJudgeReward, GoldSpan, Weights, parse_response, pauc_reward

NR = NO_REPLY


class Scripted:
    """A judge answering from tables, recording what it was asked (to check what gets judged)."""

    def __init__(self, sim=None, rep=None):
        self.sim = sim or {}
        self.rep = rep or {}
        self.sim_calls: list[tuple[str, str]] = []
        self.rep_calls: list[tuple[str, str]] = []

    def similarity(self, question, gold, prediction):
        self.sim_calls.append((gold, prediction))
        return self.sim.get((gold, prediction), 0)

    def repetition(self, previous, new):
        self.rep_calls.append((previous, new))
        return self.rep.get(new, False)


SPAN = GoldSpan("A red circle appeared.", "q", (2.5, 5.5))


def test_all_silent_scores_0375():
    r = pauc_reward([2, 4, 6, 8], [NR] * 4, [SPAN], Scripted())
    assert (r.pauc, r.rep, r.in_span, r.pfx) == (0.125, 0.0, 0.0, 0.0)
    assert r.total == pytest.approx(0.375)  # the spec's example: 3 · 0.125


def test_one_correct_reply_pauc_by_hand():
    # reply at t=4 in [2.5, 5.5]: x = 1.5·(1−0.5) = 0.75; area = 0.75·0.5 + 2.25·4 = 9.375; / (3·4)
    j = Scripted(sim={(SPAN.content, "A red circle appeared."): 4})
    r = pauc_reward([2, 4, 6, 8], [NR, "A red circle appeared.", NR, NR], [SPAN], j)
    assert r.pauc == pytest.approx(9.375 / 12)
    assert r.rep == 0.0  # the first reply's verdict (vs nothing) is "not repetitive"
    assert r.total == pytest.approx(3 * 9.375 / 12)


def test_current_reply_judged_alone_and_exact_duplicates_skipped_in_span():
    gold = GoldSpan("g", "q", (0, 10))
    j = Scripted(sim={("g", "a"): 1, ("g", "b"): 3})
    r = pauc_reward([2, 4, 6], ["a", "a", "b"], [gold], j)
    assert j.sim_calls == [("g", "a"), ("g", "b")]  # "b" alone, not "a b"
    # points (2,1) (6,3) → x 1, 3; area = 1·0.5 + 2·1 + 7·3 = 23.5; / (10·4)
    assert r.pauc == pytest.approx(23.5 / 40)


def test_double_counted_repetition_quirk():
    gold = GoldSpan("g", "q", (0, 10))
    j = Scripted(rep={"b": True})
    r = pauc_reward([2, 4], ["a", "b"], [gold], j)
    # step 6 list: a → False, b → True; step 7 appends b's verdict again: [F, T, T] → −2/3
    assert r.rep == pytest.approx(-2 / 3)
    assert j.rep_calls == [("", "a"), ("a", "b")]


def test_exact_duplicate_counts_one_and_prev_replies_count():
    j = Scripted()
    r = pauc_reward([2, 4, 6], ["x", NR, "x"], [], j, prev_replies=["old"])
    # "x" new (verdict False), second "x" an exact duplicate (1): [0, 1] → −0.5
    assert r.rep == pytest.approx(-0.5)
    assert j.rep_calls == [("old", "x")]
    r2 = pauc_reward([2], ["old"], [], Scripted(), prev_replies=["old"])
    assert r2.rep == -1.0


def test_out_of_span_divides_by_out_of_span_turns():
    # turns 2,4,6,8; span covers only t=4; out-of-span turns 2,6,8; one of them speaks → −1/3
    r = pauc_reward([2, 4, 6, 8], ["hello", NR, NR, NR], [SPAN], Scripted())
    assert r.in_span == pytest.approx(-1 / 3)
    # no out-of-span turn at all → 0
    r2 = pauc_reward([3, 4], ["x", "y"], [GoldSpan("g", "q", (0, 5))], Scripted())
    assert r2.in_span == 0.0


def test_prefix_threshold_is_50_characters_over_all_turns():
    a = "x" * 50 + " first"
    b = "x" * 50 + " second"
    r = pauc_reward([2, 4, 6, 8], [a, NR, b, NR], [], Scripted())
    assert r.pfx == pytest.approx(-1 / 4)  # denominator: all four turns
    c = "y" * 49 + "A"
    d = "y" * 49 + "B"
    assert pauc_reward([2, 4], [c, d], [], Scripted()).pfx == 0.0  # 49 common chars: below threshold
    assert pauc_reward([2, 4], ["y" * 50 + "A", "y" * 50 + "B"], [], Scripted()).pfx == -0.5  # exactly 50: a repeat
    assert pauc_reward([2], ["z" * 60], [], Scripted(), prev_replies=["z" * 55]).pfx == -1.0


def test_truncated_span_skipped_and_judge_failure_left_out():
    late = GoldSpan("late", "q", (9, 12))
    r = pauc_reward([2, 4, 6, 8], [NR] * 4, [SPAN, late], Scripted())
    assert r.span_paucs == (0.125,)  # the span starting after t=8 is not counted

    class Failing(Scripted):
        def similarity(self, *a):
            return None

        def repetition(self, *a):
            return None

    r2 = pauc_reward([4], ["a"], [SPAN], Failing())
    assert r2.pauc == 0.125 and r2.rep == 0.0  # no point, no verdict: silently dropped


def test_overlapping_spans_results_keyed_by_time_overwrite():
    g1 = GoldSpan("one", "q", (0, 6))
    g2 = GoldSpan("two", "q", (3, 9))
    j = Scripted(sim={("one", "a"): 4, ("two", "a"): 0})
    r = pauc_reward([4], ["a"], [g1, g2], j)
    # t=4 is in both spans: span 2's score (0) overwrites span 1's (4) → both spans use 0
    # span1: x = 4·0.5 = 2: area = 2·0.5 + 4·0 = 1 → 1/24; span2: x = 0.5: 0.5·0.5 = .25 → .25/24
    assert r.span_paucs == pytest.approx((1 / 24, 0.25 / 24))


def _four_part_rollout():
    """A rollout whose four reward parts are all non-zero and pairwise different, computed by hand below."""
    a = "p" * 50 + " one"
    b = "p" * 50 + " two"  # shares 51 characters with a: a prefix flag
    gold = GoldSpan("g", "q", (0, 10))
    j = Scripted(sim={("g", a): 4, ("g", b): 2}, rep={b: True})
    return pauc_reward([2, 4, 6, 12, 14, 16], [a, b, NR, "out", NR, NR], [gold], j)


# r_PAUC: points (2, 4), (4, 2) → x 1, 2 (ω = 0.5); area = 1·0.5 + 1·4 + 8·2 = 20.5; / (10·4)
# r_rep: verdicts a F, b T, "out" F, plus b again (2nd distinct in-span reply): [0, 1, 0, 1] → −2/4
# r_in_span: out-of-span turns 12, 14, 16, one speaks → −1/3
# r_pfx: only b shares ≥ 50 characters with an earlier turn; 6 turns → −1/6
FOUR_PARTS = (20.5 / 40, -0.5, -1 / 3, -1 / 6)


def test_four_nonzero_parts_by_hand():
    r = _four_part_rollout()
    assert (r.pauc, r.rep, r.in_span, r.pfx) == pytest.approx(FOUR_PARTS)
    assert len(set(FOUR_PARTS)) == 4 and 0 not in FOUR_PARTS


def test_default_weights_are_the_run_scripts():
    assert Weights() == Weights(pauc=3.0, rep=2.0, in_span=0.5, pfx=2.0)
    # 3·0.5125 + 2·(−0.5) + 0.5·(−1/3) + 2·(−1/6) = 1.5375 − 1 − 1/6 − 1/3
    assert _four_part_rollout().total == pytest.approx(1.5375 - 1 - 1 / 6 - 1 / 3)


def test_each_weight_multiplies_its_own_part():
    j = Scripted(sim={("g", "p" * 50 + " one"): 4, ("g", "p" * 50 + " two"): 2}, rep={"p" * 50 + " two": True})
    a, b = "p" * 50 + " one", "p" * 50 + " two"
    r = pauc_reward([2, 4, 6, 12, 14, 16], [a, b, NR, "out", NR, NR], [GoldSpan("g", "q", (0, 10))], j,
                    weights=Weights(pauc=1.5, rep=0.75, in_span=4.0, pfx=2.5))
    # 1.5·0.5125 + 0.75·(−0.5) + 4·(−1/3) + 2.5·(−1/6)
    assert r.total == pytest.approx(0.76875 - 0.375 - 4 / 3 - 2.5 / 6)


def test_exact_match_judge_adapter_and_parser():
    j = EvalJudgeReward(ExactMatchJudge())
    assert j.similarity("q", "A red circle appeared.", "a red circle appeared") == 4
    assert j.similarity("q", "A red circle appeared.", "A blue square appeared.") == 0
    assert j.repetition("A red circle appeared.", "A red circle appeared.") is True
    assert j.repetition("", "x") is False
    assert parse_response("NO REPLY\nuser\nQ?\nassistant\nA dog.\nuser\n\nassistant\nNO REPLY") == [
        "NO REPLY", "A dog.", "NO REPLY"]
