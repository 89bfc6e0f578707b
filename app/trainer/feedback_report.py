"""A feedback job's outcome in words, from its events: what ``duet train feedback --quiet`` prints and the Train
page shows (one wording for both, so the terminal and the app never disagree about what was learned)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def last(events: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in reversed(events) if e.get("event") == name and e.get("stage") == "feedback"), None)


def verdict_lines(verdicts: Sequence[dict[str, Any]]) -> list[str]:
    """One line a mark: ✓/✗, what it asked, and what the model said there when it was not that."""
    out = []
    for v in verdicts:
        said = "; ".join(f"{t:g} s “{s}”" for t, s in v.get("said", []))
        what = "learned" if v["ok"] else "NOT learned"
        if v["kind"] == "good":
            what = "kept" if v["ok"] else "LOST"
        tail = "" if v["ok"] else f" (said there: {said or 'nothing'})"
        out.append(f"{'✓' if v['ok'] else '✗'} {what}: {v['describe']}{tail}")
    return out


def forgetting_line(f: dict[str, Any] | None) -> str:
    if not f:
        return "Held-out clips: none in this recipe (nothing checked for forgetting)."
    pb, pn, noise = f.get("pauc_base"), f.get("pauc_new"), f.get("one_reply_noise")
    pauc = "" if pb is None or pn is None else (
        f"; PAUC {pb:.3f} → {pn:.3f} (one reply's worth: {noise:.3f})" if noise is not None else
        f"; PAUC {pb:.3f} → {pn:.3f}")
    moved = f["decisions_changed"] - f.get("decisions_unexplained", 0)
    why = f" ({moved} of them a reply said one turn earlier or later in the same words)" if moved else ""
    return (f"Held-out clips ({f['clips']} clips, {f['turns']} turns): {f['decisions_changed']} decisions{why} and "
            f"{f['texts_changed']} texts differ from the base{pauc}.")


def describe(events: Sequence[dict[str, Any]]) -> str:
    """The job's outcome: refused (and why), or each mark's verdict, the budget used and the held-out check."""
    err = next((e for e in reversed(events) if e.get("event") == "error"), None)
    if err is not None:
        return f"Not done: {err.get('message')}\nWhat to do: {err.get('advice', '')}"
    if any(e.get("event") == "cancelled" for e in events[-3:]):
        return "Cancelled: run the same command again to resume."
    done = last(events, "done")
    if done is None:
        return "The job has not finished."
    lines = [f"Model “{done.get('name')}” is in the library."]
    if done.get("verdicts") is not None:
        lines.append(str(done.get("corrections")))
        lines += verdict_lines(done["verdicts"])
        lines.append(forgetting_line(done.get("forgetting")))
    return "\n".join(lines)
