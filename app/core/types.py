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

    vision_ms: float = 0.0  # the vision encoder alone on the new frames (0 for frames reused from the cache)
    # The text model's pass over the new turn. The engine evaluates a turn in one batch (text and frames
    # together, the faster way), so all of it is in prefill_ms; evaluated chunk by chunk
    # (LlamaSettings.one_pass off), the part over the frames' embeddings is timed apart in image_prefill_ms.
    image_prefill_ms: float = 0.0
    prefill_ms: float = 0.0  # the turn's text (incl. the previous NO REPLY tail), or the whole turn in one pass
    decode_ms: float = 0.0  # sampling loop; zero on a silent step
    total_ms: float = 0.0

    def describe(self) -> str:
        """One line for a status bar: where the step's time went."""
        if self.image_prefill_ms:
            llm = f"image {self.image_prefill_ms:.0f} ms · text {self.prefill_ms:.0f} ms"
        else:
            llm = f"prompt {self.prefill_ms:.0f} ms"
        return f"vision {self.vision_ms:.0f} ms · {llm} · decode {self.decode_ms:.0f} ms"


@dataclass(frozen=True)
class CadenceReport:
    """How the session keeps up with the video (app.engine.cadence); one per step, carried by StepResult."""

    policy: str
    realtime_factor: float  # step seconds ÷ seconds of video the turn covers
    frames_skipped: int  # stale frames skipped so far in this session (by the policy or by a live source)
    tokens_per_frame: int  # budget the next turn uses

    @property
    def behind(self) -> bool:
        return self.realtime_factor > 1.0

    def to_json(self) -> dict:
        return {"policy": self.policy, "realtime_factor": round(self.realtime_factor, 3),
                "frames_skipped": self.frames_skipped, "tokens_per_frame": self.tokens_per_frame}

    def describe(self) -> str:
        """One line for a status bar."""
        pace = f"{self.realtime_factor:.1f}× slower than real time" if self.behind else "real time"
        parts = [pace]
        if self.frames_skipped:
            parts.append(f"{self.frames_skipped} frames skipped")
        parts.append(f"{self.tokens_per_frame} tokens/frame")
        return ", ".join(parts)


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
    kv_cells: int = 0  # KV cells in use after the step
    n_ctx: int = 0
    turns_frames_dropped: int = 0  # user turns whose frames were dropped so far
    first_token_margin: float | None = None  # logit(reply) − logit(NO REPLY) at the decision
    behind: bool = False  # a live source skipped frames because inference is slower than real time
    frames_reused: int = 0  # frames whose vision embeddings came from the engine's cache
    cadence: CadenceReport | None = None  # real-time factor, frames skipped, tokens per frame (None: not tracked)

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
                "vision": round(self.timings.vision_ms, 2),
                "image_prefill": round(self.timings.image_prefill_ms, 2),
                "prefill": round(self.timings.prefill_ms, 2),
                "decode": round(self.timings.decode_ms, 2),
                "total": round(self.timings.total_ms, 2),
            },
            "kv_cells": self.kv_cells,
            "n_ctx": self.n_ctx,
            "turns_frames_dropped": self.turns_frames_dropped,
            "first_token_margin": self.first_token_margin,
            "behind": self.behind,
            "frames_reused": self.frames_reused,
            "cadence": self.cadence.to_json() if self.cadence else None,
        }
