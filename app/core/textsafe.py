"""Text from outside (a model's reply, a server's error, a saved session) made safe to print or record.

A reply can contain anything a model or a hostile server emits, and a saved session's log anything
someone wrote into it: ANSI/VT escape sequences can recolour or clear the screen, retitle the window,
or (on some terminals) answer back as if typed. We drop escape sequences whole and every other
control character except newline and tab, and lone surrogates (bytes that were not UTF-8, which
would stop the print with an encoding error).

A URL the user typed may carry a password (``http://user:pass@host``): :func:`without_userinfo`
removes it before the URL is recorded (a session's ``meta.json``), printed or exported.
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
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# scheme://userinfo@ — the userinfo ends at the last '@' before the host's '/', '?' or '#'.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def terminal_safe(text: str) -> str:
    """``text`` without escape sequences, control characters (newlines and tabs kept) or lone surrogates."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def without_userinfo(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it removed (``http://u:p@h/v1`` → ``http://h/v1``)."""
    return _USERINFO.sub(r"\1", text)
