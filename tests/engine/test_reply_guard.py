"""The reply guard's loop detection and length cap, on token lists (the engine test runs it on a model)."""

from __future__ import annotations

import pytest

from app.engine.reply_guard import ReplyGuard, trim_to_sentence


def test_loops_are_found_once_complete():
    g = ReplyGuard()
    square = [7, 7, 7]
    assert g.loop_tail([1, 2] + square) == 0  # three in a row is not yet a loop for a single token
    assert g.loop_tail([1, 2] + square + [7]) == 3  # the fourth makes it one; one copy is kept
    assert g.loop_tail([5, 1, 2, 1, 2]) == 0
    assert g.loop_tail([5, 1, 2, 1, 2, 1, 2]) == 4  # a bigram three times
    assert g.loop_tail([5, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == 6
    assert g.loop_tail([1, 2, 3, 1, 2, 3, 1, 2, 4]) == 0  # broken at the end: not a loop (yet)
    assert ReplyGuard(loop_ngram=2).loop_tail([1, 2, 3] * 3) == 0  # longer than the largest n-gram looked for


def test_cap_and_switches():
    assert ReplyGuard(max_tokens=48).limit(128) == 48
    assert ReplyGuard(max_tokens=48).limit(20) == 20
    assert ReplyGuard(max_tokens=0).limit(128) == 128
    with pytest.raises(ValueError):
        ReplyGuard(max_tokens=-1)
    with pytest.raises(ValueError):
        ReplyGuard(loop_repeats=1)


def test_trim_to_sentence():
    assert trim_to_sentence(" A man walks in. He carries a red") == " A man walks in."
    assert trim_to_sentence(" A man walks in and carries") == " A man walks in and carries"
    assert trim_to_sentence(" Who? Nobody! Then a dog") == " Who? Nobody!"


def test_loops_exactly_loop_ngram_long_are_found_and_one_longer_are_not():
    """The boundary of ``loop_ngram``: an n-gram of exactly that many tokens is looked for, one more is not."""
    for n in (2, 3, 8):
        g = ReplyGuard(loop_ngram=n)
        unit = list(range(10, 10 + n))
        assert g.loop_tail([1] + unit * 3) == 2 * n, f"a {n}-token loop with loop_ngram={n}"
        assert g.loop_tail([1] + unit * 2) == 0  # two copies are not yet a loop
        longer = list(range(10, 11 + n))
        assert g.loop_tail([1] + longer * 3) == 0, f"a {n + 1}-token unit is longer than loop_ngram={n}"
    assert ReplyGuard().loop_tail([1] + list(range(10, 18)) * 3) == 16  # the default: 8-grams are loops
    assert ReplyGuard(loop_ngram=0).loop_tail([7] * 10) == 0  # 0 switches loop detection off
