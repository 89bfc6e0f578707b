"""What of a model's reply reaches the screen (chat, overlay, voice). Pure Python, no Qt.

Why a guard here, and not only in the engine: whatever a backend hands over — a remote server's raw
text, a stop string that did not fire, a reply decoded twice — ends in front of the user. Seen in the
window: a raw ``</tool_call>`` in the chat, ``<|im_end|>`` at the end of a reply, and glued doubles
such as "A yellowA yellow circle". The saved transcript keeps the reply exactly as the model gave it
(that is the training data); only what is *shown* and *spoken* is cleaned:

* escape sequences and control characters go (``app.core.textsafe``), and so do invisible format
  characters (bidi overrides, zero-width spaces; the emoji joiner stays) and U+FFFD left by a
  multi-byte character cut in half;
* special tokens go: ``<|…|>`` (Qwen's added tokens, whole or cut off at the end) and the tag-like
  tokens ``<tool_call>``, ``</tool_call>``, ``<tool_response>``, ``<think>`` and the like;
* a glued restart goes ("A yellowA yellow circle" → "A yellow circle"), and so does a run of two
  or more words said twice in a row ("A red square. A red square." → "A red square.");
* whitespace is collapsed to single spaces.
"""

from __future__ import annotations

import re
import unicodedata

from app.core.textsafe import terminal_safe

# <|im_end|>, <|endoftext|>, … and one cut off at the end of a capped reply ("… circle<|im_e").
_PIPE_TOKEN = re.compile(r"<\|[^<>|\s]{0,40}\|>|<\|[^<>|\s]{0,40}$")
# Tag-like tokens of Qwen-family tokenizers (not pipe-delimited): <tool_call>, </tool_call>, <think>, …
_TAG_TOKEN = re.compile(
    r"</?\s*(?:tool_call|tool_response|tool_calls|tools|think|thinking|function_call|function|"
    r"im_start|im_end|endoftext|answer|reasoning)\s*/?>",
    re.IGNORECASE)
_KEEP_FORMAT = {"\u200d"}  # the zero-width joiner holds emoji sequences together
_MAX_WORDS = 400  # the repeat search is quadratic; a reply is capped far below this anyway


def _drop_invisible(text: str) -> str:
    return "".join(ch for ch in text if ch == "\n" or ch == "\t" or ch in _KEEP_FORMAT
                   or (unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs") and ch != "\ufffd"))


def _drop_glued_restart(text: str) -> str:
    """"A yellowA yellow circle" → "A yellow circle": a fragment glued to a capitalised restart of itself."""
    k = 1
    while k < len(text):
        if text[k].isupper() and not text[k - 1].isspace():
            start = max(text.rfind(". ", 0, k), text.rfind("! ", 0, k), text.rfind("? ", 0, k))
            start = 0 if start < 0 else start + 2
            fragment = text[start:k]
            if len(fragment) >= 2 and text.startswith(fragment, k):
                text = text[:start] + text[k:]
                k = start + 1
                continue
        k += 1
    return text


def _key(word: str) -> str:
    return word.strip(".,;:!?\"'()[]…").lower()


def _drop_repeated_runs(text: str) -> str:
    """A run of ≥ 2 words said twice in a row keeps its first copy ("A red A red square" → "A red square")."""
    words = text.split(" ")
    if len(words) > _MAX_WORDS:
        return text
    changed = True
    while changed:
        changed = False
        keys = [_key(w) for w in words]
        for n in range(len(words) // 2, 1, -1):  # longest run first: a whole sentence said twice
            for i in range(len(words) - 2 * n + 1):
                if keys[i:i + n] == keys[i + n:i + 2 * n] and any(keys[i:i + n]):
                    del words[i + n:i + 2 * n]
                    changed = True
                    break
            if changed:
                break
    return " ".join(words)


def shown_text(text: str) -> str:
    """``text`` as the chat and the overlay show it (see the module docstring); "" when nothing is left."""
    text = terminal_safe(text)
    text = _TAG_TOKEN.sub(" ", _PIPE_TOKEN.sub(" ", text))
    text = _drop_invisible(text)
    text = " ".join(text.split())
    text = _drop_glued_restart(text)
    text = _drop_repeated_runs(text)
    # A token removed before punctuation leaves "circle ." behind.
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()
