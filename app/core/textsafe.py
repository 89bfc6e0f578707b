"""Text from outside (a model's reply, a server's error) made safe to print on a terminal.

A reply can contain anything a model or a hostile server emits: ANSI/VT escape sequences can
recolour or clear the screen, retitle the window, or (on some terminals) answer back as if typed.
We drop escape sequences whole and every other control character except newline and tab.
"""

from __future__ import annotations

import re

# CSI (ESC [ … final), OSC (ESC ] … BEL/ST), DCS/SOS/PM/APC (ESC P|X|^|_ … ST), other two-byte ESC
# sequences, and their 8-bit C1 forms (U+009B CSI, U+009D OSC, …).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` without escape sequences or control characters (newlines and tabs kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
