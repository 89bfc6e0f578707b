"""Saved sessions: every step on disk as it happens, browsable, exportable, with per-reply feedback.

Layout of one session (``<root>/<id>/``)::

    meta.json        what was watched, with which model and settings (written atomically)
    events.jsonl     one JSON object per line: step | question | feedback | end
                     (feedback records: the schema of app/core/feedback.py, docs/feedback.md)
    thumbs/          a small JPEG of the last frame of each turn that spoke or was asked

Why an append-only JSONL flushed per record: the app may be killed at any moment (OOM, a crash
inside a native library). Every record handed to the kernel before the kill is on disk whole; at
worst the very last line is cut short, and :func:`load_session` skips it. Every append first checks
that the log ends in a newline and starts a fresh line when it does not, so a mark added after such
a cut (``duet sessions feedback``, the Sessions page) is never glued onto the torn line and lost.
An fsync per record,
on a helper thread, covers power loss too without ever blocking the UI thread.
A thumbnail is written (atomically) *before* the record that names it, so no record ever points at
a missing picture. Feedback is appended too — never rewritten — so the trainer sees its history.

This module writes and lists sessions; reading one back (with its validation) is
:mod:`app.core.session_read`, turning one into Markdown or JSON :mod:`app.core.session_export`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from app.core import feedback as fbk
from app.core.atomic import append_whole, write_bytes_atomic, write_json_atomic
from app.core.errors import InputError
from app.core.formats import SESSION_FORMAT
from app.core.paths import folder_problem, user_dir
from app.core.session_read import SavedSession, load_session
from app.core.types import StepResult

log = logging.getLogger("duet.sessions")

# What a user can say about one reply (the schema lives in app/core/feedback.py; kept here for importers).
FEEDBACK_KINDS: dict[str, str] = {k: fbk.KINDS[k] for k in fbk.REPLY_KINDS}
THUMB_WIDTH = 160
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# The end reason of a transcript whose writing failed (a full disk) while its session went on.
CUT_SHORT = "write failed"
# A session id is a folder name under the store (made as 20260101-120000-ab12): nothing that leaves it.
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_session_id(sid: object) -> str:
    """``sid`` if it can only name a folder directly inside the store, else :class:`InputError`.

    Why before any lookup: an id is joined to the store's folder, and ``..``, ``/abs``, ``a\\b`` or a
    NUL would reach another folder (or crash the lookup) instead of meaning "no such session".
    """
    if not isinstance(sid, str) or not _SESSION_ID.fullmatch(sid):
        raise InputError(f"no saved session {sid!r}: that is not a session id (ids look like "
                         "20260101-120000-ab12; see `duet sessions list`)")
    return sid


def default_sessions_root() -> Path:
    return user_dir("sessions")


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
            # Read-write: each append looks at the last byte (a log cut short is continued on a fresh line).
            fd = os.open(directory / "events.jsonl", os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
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
            append_whole(self._fh.fileno(), line, fresh_line=True)
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

    def add_question(self, text: str, *, spoken: bool = False, asked_at: float | None = None) -> None:
        """``asked_at``: the stream's time when the user asked, which may be before the step that carries it."""
        record: dict[str, object] = {"type": "question", "text": text, "spoken": spoken}
        if asked_at is not None:
            record["time"] = round(float(asked_at), 3)
        self._append(record)
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
        self._let_go()  # the syncer's last fsync covers the end record

    def abandon(self) -> None:
        """Stop writing without an end record (its write failed): the file is let go, whole."""
        self._let_go()

    def _let_go(self) -> None:
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
        self._let_go()
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
    fd = _open_log(path)
    try:  # whole or not at all: on a full disk the log is left as it was; a torn last line is not continued
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        append_whole(fd, line, fsync=True, fresh_line=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def _open_log(path: Path) -> int:
    """The log opened to append; a FIFO or a device in its place is refused, never written or waited on."""
    import stat

    from app.core.bounded import UnsafeFile, describe_kind

    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), PRIVATE_FILE)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeFile(f"{path} is {describe_kind(mode)}, not a regular file; the mark was not written",
                         str(path))
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def add_feedback(directory: Path, turn: int, kind: str, on: bool = True, text: str = "") -> fbk.Feedback:
    """Mark the reply of ``turn`` in a past session (the browser's buttons)."""
    mark = _reply_mark(load_session(directory).steps, turn, kind, on, text)
    add_mark(directory, mark)
    return mark


class SessionStore:
    """All sessions under one root, newest first."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else default_sessions_root()

    def root_problem(self) -> str | None:
        """Why the sessions folder cannot exist (``DUET_DATA_DIR`` is a file, …), or None."""
        problem = folder_problem(self.root, env="DUET_DATA_DIR")
        return f"saved sessions cannot be kept: {problem}" if problem else None

    def find(self, sid: str) -> Path:
        """The folder of session ``sid`` (checked first); FileNotFoundError if none.

        Why one lookup: the CLI and the trainer used to join the id to the store themselves, each with
        its own (partial) check.
        """
        sid = check_session_id(sid.strip() if isinstance(sid, str) else sid)
        d = self.root / sid
        if not (d / "events.jsonl").is_file():
            raise FileNotFoundError(f"no saved session {sid!r} in {self.root} (see `duet sessions list`)")
        return d

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


def sessions_with_feedback(store: SessionStore) -> list[SavedSession]:
    """Sessions that carry at least one mark in force (what "my sessions with feedback" trains on)."""
    return [s for s in store.sessions() if s.marks]
