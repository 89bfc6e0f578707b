"""Saved sessions: every step on disk as it happens, browsable, exportable, with per-reply feedback.

Layout of one session (``<root>/<id>/``)::

    meta.json        what was watched, with which model and settings (written atomically)
    events.jsonl     one JSON object per line: step | question | feedback | end
                     (feedback records: the schema of app/core/feedback.py, docs/feedback.md)
    thumbs/          a small JPEG of the last frame of each turn that spoke or was asked

Why an append-only JSONL flushed per record: the app may be killed at any moment (OOM, a crash
inside a native library). Every record handed to the kernel before the kill is on disk whole; at
worst the very last line is cut short, and :func:`load_session` skips it. An fsync per record,
on a helper thread, covers power loss too without ever blocking the UI thread.
A thumbnail is written (atomically) *before* the record that names it, so no record ever points at
a missing picture. Feedback is appended too — never rewritten — so the trainer sees its history.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core import feedback as fbk
from app.core.atomic import append_whole, write_bytes_atomic, write_json_atomic
from app.core.formats import SESSION_FORMAT, upgrade
from app.core.timefmt import clock
from app.core.types import StepResult

log = logging.getLogger("duet.sessions")

# What a user can say about one reply (the schema lives in app/core/feedback.py; kept here for importers).
FEEDBACK_KINDS: dict[str, str] = {k: fbk.KINDS[k] for k in fbk.REPLY_KINDS}
THUMB_WIDTH = 160
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# The end reason of a transcript whose writing failed (a full disk) while its session went on.
CUT_SHORT = "write failed"


def default_sessions_root() -> Path:
    env = os.environ.get("DUET_DATA_DIR")
    if env:
        return Path(env) / "sessions"
    import platformdirs

    return Path(platformdirs.user_data_dir("duet")) / "sessions"


def _private_dir(path: Path) -> None:
    """Create ``path`` readable by the user only: sessions hold screen pictures and transcripts."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask, and the folder may pre-exist


def session_meta(source: str, model: str, *, interval: float, frames_per_turn: int, tokens_per_frame: int,
                 talkativeness: float, video: str | None = None) -> dict:
    """The meta.json of a new session, the same from the app and from ``duet run --save-session``.

    The stream geometry is kept so the trainer can re-read exactly the frames the model saw;
    ``video`` is the absolute path of a watched file (a relative ``source`` would not resolve later).
    """
    meta: dict = {"source": source, "model": model, "interval": interval, "frames_per_turn": frames_per_turn,
                  "tokens_per_frame": tokens_per_frame, "talkativeness": talkativeness}
    if video:
        meta["video"] = video
    return meta

class _Syncer:
    """fsyncs a file on its own thread, coalescing requests.

    Why not fsync inline: the UI thread writes the log, and one fsync on a busy disk took 150 ms in
    the responsiveness benchmark — a visible freeze. A record handed to the kernel with write() +
    flush() already survives the *process* being killed; fsync only adds survival of a power cut,
    and that can trail by a few milliseconds.
    """

    def __init__(self, fileno: int) -> None:
        self.fileno = fileno
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="duet-session-fsync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            # Read before syncing: a close() that lands during this fsync (its end record written
            # after the sync began) gets one more round, so the last fsync covers the end record.
            stop = self._stop
            try:
                os.fsync(self.fileno)
            except OSError:
                log.warning("fsync of the session log failed", exc_info=True)
            if stop:
                return

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(10)


def encode_thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """A small JPEG of an RGB frame (Pillow, so the core stays free of Qt)."""
    from PIL import Image

    pic = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    height = max(1, round(pic.height * width / max(1, pic.width)))
    pic = pic.resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


# Directories of the sessions being written by this process: the Sessions page shows them as
# running, not as "interrupted" (both have no end record yet).
_RUNNING: set[Path] = set()


def is_running(directory: Path | str) -> bool:
    """True while this process still writes the session in ``directory``."""
    return Path(directory).resolve() in _RUNNING


class SessionWriter:
    """Appends one session's records durably. Not thread-safe: its owner (the session controller) serialises writes."""

    def __init__(self, directory: Path, meta: dict, *, durable: bool = True) -> None:
        self.directory = directory
        self.id = directory.name
        self.durable = durable
        _private_dir(directory.parent)
        existed = directory.exists()
        try:
            _private_dir(directory)
            _private_dir(directory / "thumbs")
            self.meta = {"id": self.id, "started": time.time(), **meta, "format": SESSION_FORMAT}
            write_json_atomic(directory / "meta.json", self.meta)  # mkstemp: created 0600
            fd = os.open(directory / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        except OSError:  # a full disk: no half-made session folder is left behind
            if not existed:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        self._fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the session
        self._syncer = _Syncer(self._fh.fileno()) if durable else None
        self.closed = False
        self.records = 0  # steps and questions written (feedback and the end record not counted)
        _RUNNING.add(directory.resolve())
        self._steps: list[dict] = []  # turn and time of each step, so feedback can carry its video time

    def update_meta(self, **values: object) -> None:
        """Add what is only known once the session runs (the device, the source's real name)."""
        self.meta.update(values)
        write_json_atomic(self.directory / "meta.json", self.meta)

    def _append(self, record: dict) -> None:
        if self.closed:
            raise ValueError(f"session {self.id} is closed")
        record.setdefault("wall", round(time.time(), 3))
        # Whole or not at all (a full disk leaves no half line), and in the kernel at once: a kill
        # of the app cannot lose it.
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            append_whole(self._fh.fileno(), line)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.directory / "events.jsonl")) from e
        if self._syncer is not None:
            self._syncer.request()

    def add_step(self, result: StepResult, *, thumbnail: bool | None = None, folded: bool = False) -> dict:
        """Record a step; a thumbnail is kept for replies and questions (silent steps are the bulk)."""
        record: dict = {"type": "step", **result.to_json()}
        if folded:
            record["folded"] = True  # the overlay folded it into an earlier reply; kept here anyway
        keep = (not result.silent or bool(result.question)) if thumbnail is None else thumbnail
        if keep and result.frames:
            name = f"thumbs/turn-{result.turn:06d}.jpg"
            write_bytes_atomic(self.directory / name, encode_thumbnail(result.frames[-1].image), fsync=False)
            record["thumb"] = name
        self._append(record)
        self.records += 1
        self._steps.append({"turn": result.turn, "time": record["time"], "silent": result.silent})
        return record

    def add_record(self, record: dict) -> None:
        """Any other record: ``gap`` (a live stream was paused), ``fold`` (a reply folded on screen)."""
        self._append(dict(record))

    def add_question(self, text: str, *, spoken: bool = False) -> None:
        self._append({"type": "question", "text": text, "spoken": spoken})
        self.records += 1

    def add_feedback(self, turn: int, kind: str, on: bool = True, text: str = "") -> fbk.Feedback:
        """Mark the reply of ``turn`` (the chat's buttons); raises FeedbackError for a bad mark."""
        mark = _reply_mark(self._steps, turn, kind, on, text)
        self.add_mark(mark)
        return mark

    def add_mark(self, mark: fbk.Feedback) -> None:
        """Append any feedback record (``missed`` included) to the log."""
        self._append(mark.to_record() | {"wall": mark.wall or round(time.time(), 3)})

    def close(self, reason: str = "stopped") -> None:
        if self.closed:
            return
        self._append({"type": "end", "reason": reason})
        if self._syncer is not None:
            self._syncer.close()  # its last fsync covers the end record
        self._fh.close()
        self.closed = True
        _RUNNING.discard(self.directory.resolve())

    def abandon(self) -> None:
        """Stop writing without an end record (its write failed): the file is let go, whole."""
        if not self.closed:
            if self._syncer is not None:
                self._syncer.close()
            self._fh.close()
            self.closed = True
        _RUNNING.discard(self.directory.resolve())

    def discard(self) -> None:
        """Close and delete a session that recorded nothing (a start that failed before its first turn).

        Why: an empty "0 replies" entry per failed start says nothing the error message did not;
        the user saw that message in the window.
        """
        if self.records:
            raise ValueError(f"session {self.id} has {self.records} records; close it instead")
        if not self.closed:
            if self._syncer is not None:
                self._syncer.close()
            self._fh.close()
            self.closed = True
        _RUNNING.discard(self.directory.resolve())
        shutil.rmtree(self.directory, ignore_errors=True)


def _reply_mark(steps: list[dict], turn: int, kind: str, on: bool, text: str = "") -> fbk.Feedback:
    step = next((s for s in steps if int(s["turn"]) == turn), None)
    if step is None:
        raise fbk.FeedbackError(f"this session has no turn {turn}")
    return fbk.Feedback(fbk.LEGACY_KINDS.get(kind, kind), float(step.get("time", 0.0)), turn, text.strip(), on=on)


def add_mark(directory: Path, mark: fbk.Feedback) -> None:
    """Feedback on a past session (Sessions page, ``duet sessions feedback``): appended, fsynced."""
    rec = mark.to_record() | {"wall": mark.wall or round(time.time(), 3)}
    path = Path(directory) / "events.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    try:  # whole or not at all: on a full disk the log is left as it was
        append_whole(fd, (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"), fsync=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def add_feedback(directory: Path, turn: int, kind: str, on: bool = True, text: str = "") -> fbk.Feedback:
    """Mark the reply of ``turn`` in a past session (the browser's buttons)."""
    mark = _reply_mark(load_session(directory).steps, turn, kind, on, text)
    add_mark(directory, mark)
    return mark


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
        meta = json.loads(path.read_text(encoding="utf-8"))
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
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                if not _valid_record(rec):
                    out.damaged_lines += 1
                    continue
                kind = rec.get("type")
                if kind == "step":
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


class SessionStore:
    """All sessions under one root, newest first."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else default_sessions_root()

    def create(self, meta: dict, *, durable: bool = True) -> SessionWriter:
        name = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        return SessionWriter(self.root / name, meta, durable=durable)

    def list(self) -> list[Path]:
        if not self.root.exists():
            return []
        dirs = [p for p in self.root.iterdir() if p.is_dir() and (p / "events.jsonl").exists()]
        return sorted(dirs, key=lambda p: p.name, reverse=True)

    def sessions(self) -> Iterator[SavedSession]:
        for p in self.list():
            yield load_session(p)


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


def sessions_with_feedback(store: SessionStore) -> list[SavedSession]:
    """Sessions that carry at least one mark in force (what "my sessions with feedback" trains on)."""
    return [s for s in store.sessions() if s.marks]
