"""A saved session as a readable Markdown transcript or as one JSON document (Sessions page, ``duet sessions export``)."""

from __future__ import annotations

import json
import time

from app.core import feedback as fbk
from app.core.session_read import SavedSession
from app.core.timefmt import clock


def export_markdown(session: SavedSession, *, include_silent: bool = False) -> str:
    """A readable transcript: questions and replies at their video time, thumbnails linked, feedback noted."""
    m = session.meta
    lines = [f"# Duet session {session.id}", ""]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.get("started", 0)))
    lines += [f"- Started: {started}", f"- Source: `{m.get('source', '?')}`", f"- Model: `{m.get('model', '?')}`"]
    if m.get("device"):
        lines.append(f"- Device: {m['device']}")
    lines.append(f"- Ended: {session.ended or 'interrupted (the app stopped without closing the session)'}")
    lines += [f"- Turns: {len(session.steps)}, replies: {len(session.replies)}", ""]
    by_turn: dict[int, list[fbk.Feedback]] = {}
    missed = [m for m in session.marks if m.kind == "missed"]
    for m in session.marks:
        if m.turn is not None:
            by_turn.setdefault(m.turn, []).append(m)
    for s in session.steps:
        while missed and missed[0].time <= float(s.get("time", 0.0)) + 1e-6:
            m = missed.pop(0)
            lines += [f"**[{clock(m.time)}] Missed** _(should have said: “{m.text}”)_", ""]
        if s.get("silent") and not s.get("question") and not include_silent:
            continue
        stamp = clock(float(s.get("time", 0.0)))
        if s.get("question"):
            lines.append(f"**[{stamp}] You:** {s['question']}")
            lines.append("")
        if not s.get("silent"):
            tags = sorted(by_turn.get(int(s["turn"]), []), key=lambda m: m.kind)
            note = f" _({'; '.join(m.describe() for m in tags)})_" if tags else ""
            fold = " _(folded on screen: near-repeat)_" if s.get("folded") else ""
            lines.append(f"**[{stamp}] Duet:** {s['text'].strip()}{note}{fold}")
            if s.get("thumb"):
                lines.append("")
                lines.append(f"![frame at {stamp}]({s['thumb']})")
            lines.append("")
        elif include_silent:
            lines.append(f"[{stamp}] _(silent)_")
            lines.append("")
    for m in missed:
        lines += [f"**[{clock(m.time)}] Missed** _(should have said: “{m.text}”)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def export_json(session: SavedSession) -> str:
    return json.dumps(session.to_json(), indent=2, ensure_ascii=False) + "\n"
