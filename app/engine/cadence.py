"""Adaptive cadence: what a session does when a step takes longer than the video it covers.

A turn covers ``frames_per_turn × interval`` seconds of video. When the model needs longer than that
(the 3B on a 2-core CPU needs 16–31 s for a 2-second turn, docs/benchmarks.md) the session is slower
than real time, and the user must be told what was traded. Every step reports:

- the **real-time factor** (step time ÷ video time the turn covers; > 1 = slower than real time),
- the **frames skipped** so far (stale frames never shown to the model),
- the **tokens per frame** the next turn will use.

Two policies (``CadencePolicy``):

- ``keep`` — every frame is used at the configured tokens per frame (video files in evaluation: the
  result must not depend on the machine). A *live* source (camera, screen, a file played in real
  time) still skips ticks by itself when the consumer is late; those are counted, not prevented.
- ``live`` — stay live: frames that went stale while the model was busy are skipped (a live source
  does this itself; for a file read as fast as consumed the session skips as many frames as a real-
  time clock would have), and the tokens per frame are lowered, within ``[min, configured]``, while the
  real-time factor is above 1, and raised back when it falls well below 1 (hysteresis: between
  ``RAISE_BELOW`` and 1 nothing changes, so the budget does not oscillate).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from app.core.types import CadenceReport, Frame

RAISE_BELOW = 0.6  # real-time factor under which the live policy raises tokens per frame again
LOWEST_STEP = 0.5  # the live policy at most halves the tokens per frame in one step
RAISE_STEP = 1.25


class CadencePolicy(str, enum.Enum):
    KEEP = "keep"
    LIVE = "live"


class Cadence:
    """Per-session state of the policy. ``skip`` is asked for every sampled frame, ``after_step`` after a step."""

    def __init__(self, policy: CadencePolicy | str, interval: float, frames_per_turn: int, tokens_per_frame: int,
                 min_tokens_per_frame: int = 32) -> None:
        self.policy = CadencePolicy(policy)
        if not 0 < min_tokens_per_frame <= tokens_per_frame:
            raise ValueError(f"min tokens per frame must be within 1–{tokens_per_frame}, got {min_tokens_per_frame}")
        self.interval = interval
        self.frames_per_turn = frames_per_turn
        self.max_tokens = tokens_per_frame
        self.min_tokens = min_tokens_per_frame
        self.tokens_per_frame = tokens_per_frame
        self.frames_skipped = 0
        self._to_skip = 0
        self._lag = 0.0

    def budget(self, configured: int) -> int:
        """Tokens per frame for the next turn, given the session's configured budget (which may change)."""
        self.max_tokens = configured
        if self.policy is CadencePolicy.KEEP:
            return configured
        self.min_tokens = min(self.min_tokens, configured)
        self.tokens_per_frame = min(self.tokens_per_frame, configured)
        return self.tokens_per_frame

    def skip(self, frame: Frame, source_live: bool) -> bool:
        """Whether to drop this sampled frame as stale. Counts what a live source dropped before it."""
        self.frames_skipped += frame.dropped
        if source_live:
            self._to_skip = 0  # the source skips by itself; never twice
        if self.policy is CadencePolicy.KEEP or self._to_skip == 0:
            return False
        self._to_skip -= 1
        self.frames_skipped += 1
        return True

    def after_step(self, step_ms: float, frames: Sequence[Frame]) -> CadenceReport:
        covered = len(frames) * self.interval
        rtf = step_ms / 1e3 / covered if covered > 0 else 0.0
        if self.policy is CadencePolicy.LIVE:
            # A clock running in real time would have moved on by the step's excess over the turn.
            self._lag += max(0.0, step_ms / 1e3 - covered)
            n = math.floor(self._lag / self.interval + 1e-9)
            self._lag -= n * self.interval
            self._to_skip += n
            if rtf > 1.0:
                self.tokens_per_frame = max(self.min_tokens, int(self.tokens_per_frame * max(LOWEST_STEP, 1 / rtf)))
            elif rtf < RAISE_BELOW:
                self.tokens_per_frame = min(self.max_tokens, math.ceil(self.tokens_per_frame * RAISE_STEP))
        tpf = self.tokens_per_frame if self.policy is CadencePolicy.LIVE else self.max_tokens
        return CadenceReport(self.policy.value, rtf, self.frames_skipped, tpf)
