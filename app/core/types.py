"""Shared dataclasses: what a capture source yields, what a session records, what a step returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One RGB picture from a source.

    ``time`` is the source's own clock in seconds (video position for files, seconds since the
    stream started for live sources); the session's *video time* is derived from turns, not from it,
    because the protocol counts frames × interval.
    """

    image: np.ndarray = field(compare=False)  # H×W×3 uint8, RGB, C-contiguous (may be read-only)
    time: float
    index: int = 0
    source: str = ""
    dropped: int = 0  # ticks a live source skipped before this frame (consumer slower than real time)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class StepTimings:
    """Milliseconds spent in each phase of one step."""

    encode_ms: float = 0.0  # vision encoder on the new frames
    prefill_ms: float = 0.0  # text tokens of the new turn (incl. the previous NO REPLY tail)
    decode_ms: float = 0.0  # sampling loop; zero on a silent step
    total_ms: float = 0.0


@dataclass
class StepResult:
    """What one turn of the stream produced: a reply or silence, with its bookkeeping."""

    turn: int  # 0-based index of the user turn in this session
    video_time: float  # seconds, frames so far × interval
    text: str  # the assistant text exactly as decoded ("NO REPLY" on silence)
    silent: bool
    question: str | None = None  # user text that rode in this turn
    forced: bool = False  # "I must reply." prefill was used
    frames: tuple[Frame, ...] = field(default=(), repr=False)
    timings: StepTimings = field(default_factory=StepTimings)
    n_tokens: int = 0  # KV cells in use after the step
    n_ctx: int = 0
    evicted_turns: int = 0  # user turns whose frames were dropped so far
    first_token_margin: float | None = None  # logit(reply) − logit(NO REPLY) at the decision
    behind: bool = False  # a live source skipped frames because inference is slower than real time

    def to_json(self) -> dict:
        """A JSON-ready record (frames left out: they are pictures)."""
        return {
            "turn": self.turn,
            "time": round(self.video_time, 3),
            "silent": self.silent,
            "text": self.text,
            "question": self.question,
            "forced": self.forced,
            "frame_times": [round(f.time, 3) for f in self.frames],
            "timings_ms": {
                "encode": round(self.timings.encode_ms, 2),
                "prefill": round(self.timings.prefill_ms, 2),
                "decode": round(self.timings.decode_ms, 2),
                "total": round(self.timings.total_ms, 2),
            },
            "n_tokens": self.n_tokens,
            "n_ctx": self.n_ctx,
            "evicted_turns": self.evicted_turns,
            "first_token_margin": self.first_token_margin,
            "behind": self.behind,
        }
