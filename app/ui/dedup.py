"""Is a new reply a near-repeat of one the user just saw? (Pure Python; the overlay decides what to fold.)

The model often restates the scene in slightly different words ("A man walks left." / "A man is
walking left"). Showing and speaking both is noise, so a reply whose normalised text is close to a
recent one — by character similarity or by shared words — is folded into it. The transcript keeps
every reply regardless; folding is presentation only.
"""

from __future__ import annotations

from difflib import SequenceMatcher

from app.core.text import normalise


def similarity(a: str, b: str) -> float:
    """max(character ratio, word Jaccard) of the normalised texts, in [0, 1]."""
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return 1.0 if na == nb else 0.0
    chars = SequenceMatcher(None, na, nb, autojunk=False).ratio()
    wa, wb = set(na.split()), set(nb.split())
    words = len(wa & wb) / len(wa | wb)
    return max(chars, words)


def find_repeat(text: str, recent: list[str], threshold: float = 0.8) -> int | None:
    """Index into ``recent`` of the most similar earlier reply at or above ``threshold``, else None."""
    best, best_i = threshold, None
    for i, old in enumerate(recent):
        s = similarity(text, old)
        if s >= best:
            best, best_i = s, i
    return best_i
