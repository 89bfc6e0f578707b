"""Text normalisation shared by the overlay's near-repeat folding and the evaluation judges."""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script


def words(text: str) -> list[str]:
    """Lower-cased words: punctuation, underscores and apostrophes split them."""
    return WORD.findall(text.lower())


def normalise(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed ("A man, walking!" → "a man walking")."""
    return " ".join(words(text))
