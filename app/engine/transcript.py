"""The running session's saved transcript: opened when a session starts, written step by step, closed at its end.

The controller owns one and calls it from two threads (steps from the session's loop, questions and
feedback from the GUI); writes are serialised here. Saving is never allowed to stop a session: a
write that fails (a full disk) is reported once as a :class:`~app.engine.events.Problem`, and the
session goes on unsaved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from app.capture.base import CaptureError
from app.capture.parse import parse_spec
from app.core.errors import describe_write_failure
from app.core.sessions import CUT_SHORT, SessionStore, SessionWriter, session_meta
from app.core.textsafe import without_userinfo
from app.core.types import StepResult
from app.engine.events import Event, Problem
from app.engine.factory import RunRequest


class Transcript:
    """One controller's transcript; ``store=None`` keeps nothing (the replies are still tracked for feedback)."""

    def __init__(self, store: SessionStore | None, emit: Callable[[Event], None]) -> None:
        self.store = store
        self._emit = emit
        self._lock = threading.RLock()
        self.writer: SessionWriter | None = None
        self._cut_short: SessionWriter | None = None  # a transcript whose writing failed mid-session
        self.session_id: str | None = None  # the saved session of the latest run (None: not saved)
        self.replies: dict[int, dict] = {}  # turn → its record, so feedback attaches to a reply

    def reset(self) -> None:
        """A new session is about to start: no reply of the last one takes feedback any more."""
        self.replies = {}

    def open(self, request: RunRequest, device: str, source_name: str, model: str | None = None) -> None:
        """Start the session's file. ``model``: what it records as the model (default ``request.model``; the
        controller passes :func:`~app.engine.factory.recorded_model`, which names a remote server's)."""
        self.session_id = None
        if self.store is None:
            return
        c = request.config
        try:
            spec = parse_spec(request.source)
            video = str(Path(spec.path).resolve()) if spec.kind == "file" and spec.path else None
        except CaptureError:
            video = None
        meta = session_meta(request.source, model or request.model, interval=c.interval, frames_per_turn=c.frames_per_turn,
                            tokens_per_frame=c.tokens_per_frame, talkativeness=c.talkativeness, video=video)
        # A remote backend's device names its URL: never with the user:password@ it may have been given.
        meta.update(max_new_tokens=c.max_new_tokens, device=without_userinfo(device), source_name=source_name)
        try:
            self.writer = self.store.create(meta)
            self.session_id = self.writer.id
        except OSError as e:
            self._emit(Problem(describe_write_failure(e, "This session cannot be saved",
                                                      "it runs without a transcript")))

    def step(self, result: StepResult) -> None:
        record: dict | None = None

        def add(w: SessionWriter) -> None:
            nonlocal record
            record = w.add_step(result)

        if not self._write(add) and record is None:
            record = {"type": "step", **result.to_json()}
        if not result.silent and record is not None:
            self.replies[result.turn] = record

    def question(self, text: str, *, spoken: bool, asked_at: float | None = None) -> None:
        self._write(lambda w: w.add_question(text, spoken=spoken, asked_at=asked_at))

    def gap(self, at: float, seconds: float, frames_dropped: int) -> None:
        """A live source was paused: the transcript says when, for how long, and what was dropped."""
        self._write(lambda w: w.add_record({"type": "gap", "time": round(at, 3), "seconds": round(seconds, 3),
                                            "frames_dropped": frames_dropped}))

    def feedback(self, turn: int, kind: str, on: bool = True, note: str = "") -> bool:
        """The user's feedback on a reply of this session; False when ``turn`` is no reply of it."""
        if turn not in self.replies:
            return False
        return self._write(lambda w: w.add_feedback(turn, kind, on, note))

    def fold(self, turn: int) -> None:
        if turn in self.replies:
            self.replies[turn]["folded"] = True
            self._write(lambda w: w.add_record({"type": "fold", "turn": turn}))

    def close(self, reason: str) -> None:
        """End the saved session with ``reason``; one that never got a turn is deleted instead.

        Why delete: an empty "0 replies" entry per failed start says nothing the error message did not.
        """
        writer, self.writer = self.writer, None
        cut, self._cut_short = self._cut_short, None
        if cut is not None:
            _end_cut_short(cut)
        if writer is None:
            return
        try:
            if writer.records:
                writer.close(reason)
            else:
                writer.discard()
                self.session_id = None
        except (OSError, ValueError) as e:
            self._emit(Problem(f"The transcript could not be closed ({e})."))

    def _write(self, action: Callable[[SessionWriter], object]) -> bool:
        """Apply one write; on a failure say so once and go on unsaved."""
        with self._lock:
            writer = self.writer
            if writer is None:
                return False
            try:
                action(writer)
                return True
            except OSError as e:
                self.writer = None
                self._cut_short = writer  # closed when the session ends: by then there may be room again
                message = describe_write_failure(
                    e, "The transcript could not be written",
                    "the session goes on unsaved, and the turns saved before are kept")
        self._emit(Problem(message))
        return False


def _end_cut_short(writer: SessionWriter) -> None:
    """The end of a transcript whose writing failed: an end record saying it stops early, if that fits."""
    try:
        writer.close(CUT_SHORT)
    except OSError:
        writer.abandon()  # the disk is still full: the log stays whole, it just has no end record
