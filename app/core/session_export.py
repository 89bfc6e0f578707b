"""A saved session as a Markdown transcript or one JSON document (Sessions page, ``duet sessions export``).

Everything in a session came from outside — a model's replies, a server's, the user's corrections,
and whatever else someone wrote into its files — so the Markdown passes every such string through
:func:`app.core.textsafe.terminal_safe` (it is printed by ``duet sessions show`` and read with
``cat``), and URLs lose their ``user:password@``. The JSON keeps the data as it is, but escapes
C1 control characters and lone surrogates (``\\u009b``) so it too is safe to print and always valid UTF-8.
"""

from __future__ import annotations

import json
import re
import time

from app.core import feedback as fbk
from app.core.session_read import SavedSession
from app.core.textsafe import terminal_safe, without_userinfo
from app.core.timefmt import clock

# What json.dumps(ensure_ascii=False) leaves raw but a terminal may act on (C1 controls such as U+009B CSI)
# or cannot encode (lone surrogates); only ever found inside JSON strings, so a \u escape keeps the value.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f\ud800-\udfff]")


def _safe(value: object) -> str:
    return terminal_safe(without_userinfo(str(value)))


def export_markdown(session: SavedSession, *, include_silent: bool = False) -> str:
    """A readable transcript: questions and replies at their video time, thumbnails linked, feedback noted."""
    m = session.meta
    lines = [f"# Duet session {_safe(session.id)}", ""]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.get("started", 0)))
    lines += [f"- Started: {started}", f"- Source: `{_safe(m.get('source', '?'))}`",
              f"- Model: `{_safe(m.get('model', '?'))}`"]
    if m.get("device"):
        lines.append(f"- Device: {_safe(m['device'])}")
    ended = _safe(session.ended) if session.ended else \
        "interrupted (the app stopped without closing the session)"
    lines.append(f"- Ended: {ended}")
    lines += [f"- Turns: {len(session.steps)}, replies: {len(session.replies)}", ""]
    by_turn: dict[int, list[fbk.Feedback]] = {}
    missed = [m for m in session.marks if m.kind == "missed"]
    for m in session.marks:
        if m.turn is not None:
            by_turn.setdefault(m.turn, []).append(m)
    for s in session.steps:
        while missed and missed[0].time <= float(s.get("time", 0.0)) + 1e-6:
            m = missed.pop(0)
            lines += [f"**[{clock(m.time)}] Missed** _(should have said: “{_safe(m.text)}”)_", ""]
        if s.get("silent") and not s.get("question") and not include_silent:
            continue
        stamp = clock(float(s.get("time", 0.0)))
        if s.get("question"):
            lines.append(f"**[{stamp}] You:** {_safe(s['question'])}")
            lines.append("")
        if not s.get("silent"):
            tags = sorted(by_turn.get(int(s["turn"]), []), key=lambda m: m.kind)
            note = f" _({'; '.join(_safe(m.describe()) for m in tags)})_" if tags else ""
            fold = " _(folded on screen: near-repeat)_" if s.get("folded") else ""
            lines.append(f"**[{stamp}] Duet:** {_safe(s['text'].strip())}{note}{fold}")
            if s.get("thumb"):
                lines.append("")
                lines.append(f"![frame at {stamp}]({_safe(s['thumb'])})")
            lines.append("")
        elif include_silent:
            lines.append(f"[{stamp}] _(silent)_")
            lines.append("")
    for m in missed:
        lines += [f"**[{clock(m.time)}] Missed** _(should have said: “{_safe(m.text)}”)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def export_json(session: SavedSession) -> str:
    data = session.to_json()
    # A session saved before URLs were cleaned may hold a password in its meta.json: never exported.
    data["meta"] = {k: without_userinfo(v) if isinstance(v, str) else v for k, v in data["meta"].items()}
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return _RAW_IN_JSON.sub(lambda c: f"\\u{ord(c.group()):04x}", text)
