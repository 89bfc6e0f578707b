"""Is a new reply a true repeat of one the user just saw? (Pure Python; the overlay decides what to fold.)

The model often restates the scene ("A man walks left." / "A man is walking left"). Showing and
speaking both is noise, so a repeat is folded into the card already on screen. But a fold hides
the new reply, so it must never hide new information: an earlier rule (character similarity or
shared words ≥ 0.8) folded "The triangle appeared." into "The circle appeared." and "A yellow
circle" into "A blue circle" — the one word that mattered was the one that differed.

A reply is a repeat only when it says the same thing word for word, once what carries no meaning
here is set aside: case, punctuation, articles and auxiliaries ("a", "the", "is", "has", …),
number words against digits ("two" = "2"), and the inflection of a verb ("walks" = "walking" =
"walked"). Every other word — a colour, a shape, a number, a name — must be the same, in the same
order; a bare word and an inflected one differ ("circle" ≠ "circles": that is a count). The
transcript keeps every reply regardless; folding is presentation only.
"""

from __future__ import annotations

from app.core.text import words

# Words that carry no meaning a fold could hide (articles, auxiliaries, fillers).
FILLER = frozenset({"a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "s",
                    "has", "have", "had", "there", "here", "now", "just"})
NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
SPELLINGS = {"gray": "grey", "colour": "color", "centre": "center"}


def content_words(text: str) -> list[str]:
    """The words a fold compares: lower-case, fillers dropped, numbers as digits, one spelling."""
    out = []
    for w in words(text):
        if w in FILLER:
            continue
        out.append(NUMBERS.get(w) or SPELLINGS.get(w, w))
    return out


def _inflection(word: str) -> tuple[str, str]:
    """(stem, ending) with ending one of "ing", "ed", "s" or "" (a bare word)."""
    for ending, shortest in (("ing", 5), ("ed", 4), ("s", 4)):
        if word.endswith(ending) and len(word) >= shortest and not word.endswith("ss"):
            return word[:-len(ending)], ending
    return word, ""


def _same_stem(a: str, b: str) -> bool:
    """"mov"/"move" (a dropped e), "runn"/"run" (a doubled consonant)."""
    if a == b or a + "e" == b or b + "e" == a:
        return True
    return (len(a) > 2 and a[-1] == a[-2] and a[:-1] == b) or (len(b) > 2 and b[-1] == b[-2] and b[:-1] == a)


def same_word(a: str, b: str) -> bool:
    """Equal, or two inflections of one verb ("walks"/"walking"); never a bare word against an inflected one."""
    if a == b:
        return True
    (sa, ea), (sb, eb) = _inflection(a), _inflection(b)
    return bool(ea and eb) and _same_stem(sa, sb)


def same_meaning(a: str, b: str) -> bool:
    """True when ``b`` repeats ``a`` (see the module docstring); two replies with no content words never do."""
    wa, wb = content_words(a), content_words(b)
    return bool(wa) and len(wa) == len(wb) and all(same_word(x, y) for x, y in zip(wa, wb, strict=True))


def find_repeat(text: str, recent: list[str]) -> int | None:
    """Index into ``recent`` of the newest reply that ``text`` repeats, else None."""
    for i in range(len(recent) - 1, -1, -1):
        if same_meaning(recent[i], text):
            return i
    return None
