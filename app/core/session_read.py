"""Reading a saved session back (``<root>/<id>/``, written by :mod:`app.core.sessions`): validation first.

A session folder is user data that may be damaged: the app killed mid-line, a hand edit, a newer
Duet's records. Every record is checked for the fields its readers index before it is used; a bad
one is skipped and counted (``damaged_lines``, ``problem``), never fatal, and a damaged meta.json is
set aside rather than overwritten.

A line cut short by a crash is skipped, but a whole record that an older Duet appended right after
it (on the same line, as it did not start a fresh one) is recovered. Only regular files are read,
and only so much of them (:mod:`app.core.bounded`): a FIFO or ``/dev/zero`` in a session's place
cannot hang the Sessions page or ``duet sessions``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.core import feedback as fbk
from app.core.bounded import bounded_lines, open_regular, read_regular_text
from app.core.formats import upgrade
from app.core.sizes import human_bytes

log = logging.getLogger("duet.sessions")

# Step fields an older Duet wrote under another name, read under today's (a saved session is never rewritten).
RENAMED_STEP_FIELDS = {"n_tokens": "kv_cells", "evicted_turns": "turns_frames_dropped"}
# Bounds on what is read of a session: a step record is about 0.5 KB, so 256 MiB is days of one-second
# turns; the longest record (a reply, a correction) is a few KB, so a 1 MiB line is damage.
META_MAX_BYTES = 1 << 20
LOG_MAX_BYTES = 256 << 20
LINE_MAX_BYTES = 1 << 20


@dataclass
class SavedSession:
    """A session read back from disk."""

    directory: Path
    meta: dict
    steps: list[dict] = field(default_factory=list)
    questions: list[dict] = field(default_factory=list)
    feedback: dict[int, set[str]] = field(default_factory=dict)  # turn → reply kinds currently on
    gaps: list[dict] = field(default_factory=list)  # pauses of a live source: time, seconds, frames_dropped
    marks: list[fbk.Feedback] = field(default_factory=list)  # every mark in force (missed included)
    ended: str | None = None  # the end reason; None when the app died mid-session
    damaged_lines: int = 0
    problem: str | None = None  # what was damaged and skipped or set aside, for the user

    @property
    def id(self) -> str:
        return self.directory.name

    @property
    def replies(self) -> list[dict]:
        return [s for s in self.steps if not s.get("silent")]

    @property
    def title(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.meta.get("started", 0)))
        return f"{started} · {self.meta.get('source', '?')}"

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "meta": self.meta,
            "ended": self.ended,
            "steps": self.steps,
            "questions": self.questions,
            "feedback": {str(t): sorted(k) for t, k in sorted(self.feedback.items()) if k},
            "marks": [{k: v for k, v in m.to_record().items() if k != "type"} for m in self.marks],
        }


_REPORTED: set[tuple[str, int]] = set()  # (session folder, damaged lines) already logged: report once


def _valid_record(rec: object) -> bool:
    """Whether a parsed line has the fields its readers index (a damaged one is skipped, not fatal)."""
    if not isinstance(rec, dict):
        return False
    kind = rec.get("type")
    if kind == "step":
        return (_is_int(rec.get("turn")) and _is_num(rec.get("time", 0.0)) and isinstance(rec.get("text"), str)
                and isinstance(rec.get("silent", False), bool)
                and (rec.get("question") is None or isinstance(rec.get("question"), str))
                and (rec.get("thumb") is None or _safe_thumb(rec.get("thumb"))))
    if kind == "feedback":  # its fields are checked by the schema (app/core/feedback.py) when read
        return isinstance(rec.get("kind"), str)
    if kind == "question":
        return isinstance(rec.get("text"), str)
    return kind == "end" or isinstance(kind, str)  # unknown kinds (a newer Duet's) are ignored, not damage


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _safe_thumb(name: object) -> bool:
    """A thumbnail path inside the session's thumbs/ folder (a record must not point elsewhere)."""
    return isinstance(name, str) and name.startswith("thumbs/") and ".." not in name and "\\" not in name


def _read_meta(directory: Path) -> tuple[dict, str | None]:
    """meta.json, or a minimal one and the reason it was set aside (moved to meta.corrupt-*.json)."""
    path = directory / "meta.json"
    try:
        meta = json.loads(read_regular_text(path, META_MAX_BYTES))
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        return meta, None
    except FileNotFoundError:
        return {"id": directory.name}, None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        aside = path.with_name(f"meta.corrupt-{int(time.time())}.json")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        return {"id": directory.name}, f"meta.json is damaged ({type(e).__name__}); set aside as {aside.name}"


def _parse_line(line: str) -> tuple[object, bool]:
    """(the record of a line, whether something before it was torn off).

    A line that is not JSON may be a record cut short by a crash with a whole record glued after it
    (an older Duet appended without starting a fresh line): that record is found and kept.
    """
    try:
        return json.loads(line), False
    except json.JSONDecodeError:
        pass
    start = line.find('{"type"', 1)
    while start > 0:
        try:
            rec = json.loads(line[start:])
        except json.JSONDecodeError:
            start = line.find('{"type"', start + 1)
            continue
        return rec, True
    return None, False


def _read_log(path: Path, out: SavedSession) -> tuple[list[str], str | None]:
    """The log's lines, bounded, and what kept it from being read whole (a FIFO, a device, its size)."""
    try:
        fh = open_regular(path)
    except FileNotFoundError:
        return [], None
    except OSError as e:  # a FIFO, a device, a folder: refused without waiting on it
        return [], f"events.jsonl cannot be read ({e})"
    lines: list[str] = []
    problem = None
    with fh:
        for raw in bounded_lines(fh, max_line=LINE_MAX_BYTES, max_total=LOG_MAX_BYTES):
            if raw is None:
                out.damaged_lines += 1  # an over-long line: damage, skipped without being held
                continue
            lines.append(raw.decode("utf-8", errors="replace"))
        if fh.tell() >= LOG_MAX_BYTES and fh.read(1):
            problem = f"events.jsonl is larger than {human_bytes(LOG_MAX_BYTES)}; only its beginning was read"
    return lines, problem


def load_session(directory: Path | str) -> SavedSession:
    """Read a session, skipping damaged records (a cut-off last line when the app was killed, a hand edit).

    Damage is counted on the result (``damaged_lines``, ``problem``) and logged once per session.
    """
    directory = Path(directory)
    meta, problem = _read_meta(directory)
    # An older meta.json is migrated in memory only (sessions are never rewritten on reading); a newer
    # one is read for what this version knows, and its file stays as it is.
    meta = upgrade("session", meta).data
    for key, check in (("started", _is_num), ("source", lambda v: isinstance(v, str)),
                       ("model", lambda v: isinstance(v, str))):
        if key in meta and not check(meta[key]):
            meta.pop(key)  # a wrong-typed field would break the title or the export
    out = SavedSession(directory, meta)
    out.problem = problem
    path = directory / "events.jsonl"
    raw_marks: list[dict] = []
    lines, log_problem = _read_log(path, out)
    if log_problem:
        out.problem = f"{out.problem}; {log_problem}" if out.problem else log_problem
    for line in lines:
        if not line.strip():
            continue
        rec, torn = _parse_line(line)
        if torn:
            out.damaged_lines += 1  # the torn record before the one recovered
        if not _valid_record(rec):
            out.damaged_lines += 1
            continue
        kind = rec.get("type")
        if kind == "step":
            for old, new in RENAMED_STEP_FIELDS.items():
                if old in rec:
                    rec.setdefault(new, rec.pop(old))
            out.steps.append(rec)
        elif kind == "question":
            out.questions.append(rec)
        elif kind == "gap":
            out.gaps.append(rec)
        elif kind == "fold":
            for step in reversed(out.steps):
                if step.get("turn") == rec.get("turn"):
                    step["folded"] = True
                    break
        elif kind == "feedback":
            raw_marks.append(rec)
        elif kind == "end":
            out.ended = str(rec.get("reason", "stopped"))
    # Feedback is read after the steps: a version-1 record takes its time from the step it names.
    times = {int(s["turn"]): float(s.get("time", 0.0)) for s in out.steps if isinstance(s.get("turn"), int)}
    parsed = []
    for rec in raw_marks:
        try:
            parsed.append(fbk.from_record(rec, times))
        except fbk.FeedbackError as e:
            log.debug("%s: feedback record skipped (%s)", path, e)  # counted; reported once below
            out.damaged_lines += 1
    out.marks = fbk.current(parsed)
    for m in parsed:  # turn → reply kinds on; a turn whose marks were all withdrawn keeps an empty set
        if m.turn is not None:
            kinds = out.feedback.setdefault(m.turn, set())
            (kinds.add if m.on else kinds.discard)(m.kind)
    if out.damaged_lines:
        note = f"{out.damaged_lines} damaged record(s) skipped"
        out.problem = f"{out.problem}; {note}" if out.problem else note
    if out.problem and (str(directory), out.damaged_lines) not in _REPORTED:
        _REPORTED.add((str(directory), out.damaged_lines))
        log.warning("session %s: %s", directory, out.problem)
    return out
