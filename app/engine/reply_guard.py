"""Keeping replies sane: a repeated n-gram loop ends the reply; a length cap fits MMDuet2's short replies.

MMDuet2 was trained on short live comments (one or two sentences; the demo model's replies are 5–25
tokens). On footage unlike its training data a model can fall into a loop ("square square square …")
that would otherwise run to ``max_new_tokens`` and then sit in the context for the rest of the
stream. Greedy decoding never leaves such a loop by itself, so the first full repetition is enough
evidence: the reply is ended there and the repeats are cut, keeping one copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SENTENCE_ENDS = (".", "!", "?", "。", "！", "？")


@dataclass(frozen=True)
class ReplyGuard:
    """How a spoken reply is bounded. ``max_tokens`` 0 and ``loop_ngram`` 0 switch each part off."""

    max_tokens: int = 48  # reply length cap (tokens); the caller's max_new_tokens applies too, whichever is lower
    loop_ngram: int = 8  # look for loops of n-grams up to this many tokens
    loop_repeats: int = 3  # an n-gram (n ≥ 2) seen this many times back to back is a loop
    loop_repeats_unigram: int = 4  # the same single token this many times in a row is a loop

    def __post_init__(self) -> None:
        if self.max_tokens < 0 or self.loop_ngram < 0:
            raise ValueError("max_tokens and loop_ngram must be ≥ 0 (0 = off)")
        if self.loop_repeats < 2 or self.loop_repeats_unigram < 2:
            raise ValueError("a loop needs at least 2 repeats")

    def limit(self, max_new_tokens: int) -> int:
        return min(max_new_tokens, self.max_tokens) if self.max_tokens else max_new_tokens

    def loop_tail(self, tokens: Sequence[int]) -> int:
        """How many tokens at the end of ``tokens`` are repeats of a loop (0 = no loop). Only loops that
        end at the last token are found, so calling it after every sampled token finds each loop once."""
        for n in range(1, min(self.loop_ngram, len(tokens)) + 1):
            reps = self.loop_repeats_unigram if n == 1 else self.loop_repeats
            if len(tokens) < n * reps:
                continue
            unit = list(tokens[-n:])
            if all(list(tokens[len(tokens) - (k + 1) * n:len(tokens) - k * n]) == unit for k in range(1, reps)):
                return n * (reps - 1)  # keep one copy of the unit
        return 0


def trim_to_sentence(text: str) -> str:
    """A reply cut by the length cap, shortened to its last complete sentence if it has one."""
    cut = max(text.rfind(e) for e in SENTENCE_ENDS)
    return text[:cut + 1] if cut > 0 else text
