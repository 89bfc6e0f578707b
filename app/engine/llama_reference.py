"""Reference modes of the llama.cpp engine, for parity tests and benchmarks only (never used by the app).

They answer "does the engine's shortcut change anything?" by doing things the plain way:

- ``instant_silence=False``: the silence decision is not read from the first token; ``NO REPLY`` is
  decoded token by token like any greedy reply.
- ``full_reeval=True``: the way llama-cpp-python's stock chat handler works — clear the cache,
  re-render the whole history and re-evaluate it every step, every frame re-encoded, no eviction.

Both switch off the reply guard and the embedding cache, so that a comparison measures exactly
one shortcut and nothing else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.reply_guard import ReplyGuard

NO_GUARD = ReplyGuard(max_tokens=0, loop_ngram=0)


class ReferenceLlamaBackend(LlamaBackend):
    """:class:`LlamaBackend` with the shortcuts optionally switched off. See the module docstring."""

    name = "llama.cpp (reference)"

    def __init__(self, model_path: Path | str, mmproj_path: Path | str, settings: LlamaSettings | None = None, *,
                 instant_silence: bool = True, full_reeval: bool = False) -> None:
        s = dataclasses.replace(settings or LlamaSettings(), embed_cache_mib=0, near_identical=0.0, guard=NO_GUARD)
        self.instant_silence = instant_silence
        self.full_reeval = full_reeval
        super().__init__(model_path, mmproj_path, s)

    def reset(self, system_prompt: str) -> None:
        super().reset(system_prompt)
        self._transcript = ""  # full_reeval: the rendered history so far (without the pending head)
        self._all_images: list[np.ndarray] = []

    def load_history(self, transcript: str, images: list[np.ndarray]) -> None:
        """full_reeval: start from a rendered history (system prompt, turns, last tail) and its frames, as
        if those turns had been stepped — so a benchmark can time step N without running N−1 steps."""
        if not self.full_reeval:
            raise ValueError("load_history needs full_reeval=True")
        if transcript.count(self.proj.marker) != len(images):
            raise ValueError(f"{transcript.count(self.proj.marker)} image markers for {len(images)} frames")
        self._transcript, self._all_images, self.pending = "", list(images), transcript

    def _prompt_head(self, images: list[np.ndarray], user: str) -> tuple[str, list[np.ndarray]]:
        if not self.full_reeval:
            return super()._prompt_head(images, user)
        # Forget the cache, re-render the history, re-encode every frame.
        self._transcript += self.pending
        self._all_images += images
        self.ctx.clear()
        self.n_past = self.n_cells = 0
        self.turns = []
        head = self._transcript
        self._transcript += user
        return head, list(self._all_images)

    def _decides_silence(self, biased: np.ndarray) -> bool:
        return self.instant_silence and super()._decides_silence(biased)

    def _after_step(self, text_out: str) -> None:
        if self.full_reeval and self.pending == protocol.IM_END + "\n":
            self._transcript += text_out  # the reply tokens are in the cache; keep the text in step
