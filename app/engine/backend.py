"""What a model backend must do for a proactive session, whatever runs the model.

A backend owns the model's context (KV cache or remote history). The session tells it, turn by
turn, "here are k new frames and maybe some text: speak or stay silent" and the backend answers
with a :class:`BackendStep`. Keeping the interface this narrow is what lets the in-process
llama.cpp engine, a remote OpenAI-compatible server and the tests' reference path be swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.core.config import DEFAULT_MAX_NEW_TOKENS
from app.core.errors import ResourceError
from app.core.types import StepTimings


class BackendError(ResourceError):
    """The model could not be loaded or run; the message names the file or setting at fault."""


@dataclass
class BackendStep:
    text: str  # decoded assistant text ("NO REPLY" when silent); excludes "I must reply.\n"
    silent: bool
    timings: StepTimings = field(default_factory=StepTimings)
    kv_cells: int = 0  # KV cells in use after the step
    n_ctx: int = 0
    turns_frames_dropped: int = 0
    first_token_margin: float | None = None
    frames_reused: int = 0  # frames whose vision embeddings came from the cache (not encoded again)


class Backend(Protocol):
    """A stateful MMDuet2 dialogue: system prompt first, then one call per user turn."""

    name: str
    device: str  # what actually runs the model, e.g. "CPU (2 threads)" or "CUDA: NVIDIA H100"

    def reset(self, system_prompt: str) -> None:
        """Forget the dialogue and start again from the system prompt."""

    def step(
        self,
        images: Sequence[np.ndarray],
        text: str = "",
        *,
        must_reply: bool = False,
        talkativeness: float = 0.0,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> BackendStep:
        """Append one user turn (images first, then text) and produce the assistant turn."""

    def close(self) -> None:
        """Free the model."""
