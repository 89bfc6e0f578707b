"""ProactiveSession: frames and questions in, MMDuet2 turns out, one decision per turn.

The session is the protocol's bookkeeper (docs/protocol.md): k frames per user turn, images first
then the user's queued text, video time = frames fed × interval, "I must reply." forcing. It knows
nothing about how the model runs; a :class:`~app.engine.backend.Backend` does that.

The whole API is a lazy iterator of :class:`StepResult` (``run``), plus ``ask`` from any thread.
Its settings are :class:`~app.core.config.SessionConfig` (re-exported here for callers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from app.capture.base import FrameSource
from app.capture.resize import fit_frame
from app.core.config import SessionConfig
from app.core.types import Frame, StepResult, StepTimings
from app.engine.backend import Backend
from app.engine.cadence import Cadence

log = logging.getLogger("duet.session")
__all__ = ["ProactiveSession", "SessionConfig"]

@dataclass
class _Question:
    text: str
    at: float | None  # video time at which it is asked; None = next turn
    must_reply: bool = False


class ProactiveSession:
    """One stream's dialogue. Not thread-safe except for :meth:`ask` and :meth:`stop`."""

    def __init__(self, backend: Backend, config: SessionConfig | None = None) -> None:
        self.backend = backend
        self.config = config or SessionConfig()
        self._lock = threading.Lock()
        self._questions: list[_Question] = []
        self._stop = threading.Event()
        self.reset()

    # ---- inputs from any thread -------------------------------------------------------------
    def ask(self, text: str, *, at: float | None = None, must_reply: bool = False) -> None:
        """Queue user text for the next user turn (or the first turn at/after video time ``at``)."""
        text = text.strip()
        if not text:
            return
        with self._lock:
            self._questions.append(_Question(text, at, must_reply))

    def stop(self) -> None:
        self._stop.set()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the dialogue, the video time and pending frames (queued timed questions stay)."""
        self.backend.reset(self.config.system_prompt)
        self.video_time = 0.0
        self.turn = 0
        self._pending: list[Frame] = []
        self.bad_frames = 0
        self._stop.clear()
        cfg = self.config
        self.cadence = Cadence(cfg.cadence, cfg.interval, cfg.frames_per_turn, cfg.tokens_per_frame,
                               min(cfg.min_tokens_per_frame, cfg.tokens_per_frame))

    def break_turn(self) -> int:
        """Drop the frames collected for the turn in progress; returns how many.

        Called when the stream had a gap (a live source paused): a turn must never hold frames
        from two different moments, so the next turn starts from fresh frames only.
        """
        dropped, self._pending = len(self._pending), []
        return dropped

    def _take_text(self, video_time_after: float) -> tuple[str | None, bool]:
        with self._lock:
            due = [q for q in self._questions if q.at is None or q.at <= video_time_after + 1e-9]
            self._questions = [q for q in self._questions if q not in due]
            force = any(q.must_reply for q in due)
        text = " ".join(q.text for q in due) if due else None
        return text, force

    # ---- the loop ---------------------------------------------------------------------------
    def feed(self, frame: Frame) -> StepResult | None:
        """Add one sampled frame; once a turn's worth is collected, run the model on it.

        A frame that cannot be a picture (zero size, wrong shape) is dropped and counted in
        ``bad_frames`` rather than ending the stream: one glitch from a capture device must not
        stop the commentary.
        """
        img = frame.image
        if img is None or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            self.bad_frames += 1
            log.warning("dropped an unusable frame at %.2f s (shape %s)", frame.time,
                        getattr(img, "shape", None))
            return None
        self._pending.append(frame)
        if len(self._pending) < self.config.frames_per_turn:
            return None
        frames, self._pending = tuple(self._pending), []
        return self._step(frames)

    def _step(self, frames: tuple[Frame, ...]) -> StepResult:
        cfg = self.config
        # Each frame stands for its own tick and for the ticks a live source dropped before it while the model
        # was busy (Frame.dropped): the world moved on meanwhile, so the clock does too, and a reply's time is
        # that of the frames it saw, not behind them by every step the model took too long.
        video_time = self.video_time + sum(1 + f.dropped for f in frames) * cfg.interval
        text, force = self._take_text(video_time)
        images = [fit_frame(f.image, self.cadence.budget(cfg.tokens_per_frame)) for f in frames]
        t0 = time.perf_counter()
        out = self.backend.step(
            images,
            text or "",
            must_reply=force,
            talkativeness=cfg.talkativeness,
            max_new_tokens=cfg.max_new_tokens,
        )
        timings = out.timings if out.timings.total_ms else StepTimings(total_ms=(time.perf_counter() - t0) * 1e3)
        self.video_time = video_time
        result = StepResult(
            turn=self.turn,
            video_time=video_time,
            text=out.text,
            silent=out.silent,
            question=text,
            forced=force,
            frames=frames,
            timings=timings,
            kv_cells=out.kv_cells,
            n_ctx=out.n_ctx,
            turns_frames_dropped=out.turns_frames_dropped,
            first_token_margin=out.first_token_margin,
            behind=any(f.dropped for f in frames),
            frames_reused=out.frames_reused,
            cadence=self.cadence.after_step(timings.total_ms, frames),
        )
        self.turn += 1
        return result

    def run(self, source: FrameSource) -> Iterator[StepResult]:
        """Drive the session from a source until it ends, :meth:`stop` is called or ``max_turns`` is reached.

        The source must already be open. Frames are sampled at ``config.interval`` by the source
        itself, so live sources skip ahead instead of queueing when the model is slow.
        """
        for frame in source.sample(self.config.interval):
            if self._stop.is_set():
                break
            if self.cadence.skip(frame, source.live):
                self.video_time += self.config.interval  # a stale frame skipped: its time still passed
                continue
            result = self.feed(frame)
            if result is not None:
                yield result
                if self.config.max_turns and self.turn >= self.config.max_turns:
                    break
