"""The in-process MMDuet2 engine on llama.cpp + libmtmd.

Per step it evaluates only what is new on top of the KV cache: the tail of the previous assistant
turn, the new user turn (frames encoded once, here and never again) and the generation prompt.
The speak-or-stay-silent decision is read from the first token's logits ("instant silence"): a
silent step runs no decode loop, and its ``NO REPLY<|im_end|>`` tokens ride in the next step's batch.

The context is bounded by evicting, oldest first, (1) frames, (2) whole turns that carry no dialogue
(silent, no user text), (3) dialogue turns — never the system prompt. Cells are removed with
``llama_memory_seq_rm``; positions keep growing (M-RoPE allows gaps; shifting would abort).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core import protocol
from app.core.config import resolve_threads
from app.core.types import StepTimings
from app.engine.backend import BackendError, BackendStep
from app.engine.llama_native import (
    Chunks,
    Context,
    ContextSettings,
    Model,
    Projector,
    gpu_offload_supported,
    system_info,
)
from app.modelhub.validate import ModelFileError, check_pair

log = logging.getLogger("duet.engine")


@dataclass
class LlamaSettings:
    n_ctx: int = 8192
    n_threads: int = 0
    n_gpu_layers: int = -1  # -1 = all layers when the build has GPU support
    mmproj_on_gpu: bool = True
    flash_attn: str = "auto"  # auto | on | off
    kv_f32: bool = False
    reserve: int = 0  # cells kept free beyond max_new_tokens (0 = automatic)
    # Reference modes, for tests and benchmarks (both off = the engine as designed):
    instant_silence: bool = True  # False: decode "NO REPLY" token by token like plain greedy decoding
    full_reeval: bool = False  # True: clear the cache and re-evaluate the whole history every step,
    # the way llama-cpp-python's stock chat handler works (every frame re-encoded, no eviction)

    def flash_attn_type(self) -> int:
        return {"auto": -1, "on": 1, "off": 0}[self.flash_attn]


@dataclass
class _Span:
    """Positions [start, end) of one segment in the cache."""

    start: int
    end: int
    cells: int


@dataclass
class _TurnRecord:
    index: int
    start: int  # first position of the user turn
    images: list[_Span] = field(default_factory=list)
    end: int | None = None  # position after this turn's assistant tail (known one step later)
    cells: int = 0  # all cells of the turn, tail included once known
    dialogue: bool = False  # carries user text or a spoken reply
    frames_dropped: bool = False
    removed: bool = False


class LlamaBackend:
    """A stateful MMDuet2 dialogue in one llama.cpp context. See the module docstring."""

    name = "llama.cpp"

    def __init__(self, model_path: Path | str, mmproj_path: Path | str, settings: LlamaSettings | None = None) -> None:
        # A copy: the caller's settings object is never changed (threads are resolved here, in ours).
        s = dataclasses.replace(settings) if settings is not None else LlamaSettings()
        s.n_threads = resolve_threads(s.n_threads)  # llama.cpp's own default can exceed our cores
        self.settings = s
        try:
            self.info = check_pair(model_path, mmproj_path)
        except ModelFileError as e:
            raise BackendError(str(e)) from e
        gpu = gpu_offload_supported()
        wants_gpu = s.n_gpu_layers != 0
        if wants_gpu and not gpu:
            log.warning("This llama.cpp build has no GPU support; running on the CPU. For NVIDIA GPUs reinstall "
                        "with CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall llama-cpp-python")
        n_layers = (self.info.n_layers + 1 if s.n_gpu_layers < 0 else s.n_gpu_layers) if gpu else 0
        try:
            self.model = Model(Path(model_path), n_gpu_layers=n_layers)
            self.ctx = Context(self.model, ContextSettings(n_ctx=s.n_ctx, n_threads=s.n_threads,
                                                           flash_attn=s.flash_attn_type(), kv_f32=s.kv_f32))
            self.proj = Projector(Path(mmproj_path), self.model, s.n_threads, use_gpu=gpu and s.mmproj_on_gpu,
                                  flash_attn=s.flash_attn_type())
        except RuntimeError as e:
            raise BackendError(str(e)) from e
        self.device = self._describe_device(gpu, n_layers)
        self.n_ctx = self.ctx.n_ctx
        self._no_reply_first = self.model.tokenize(protocol.NO_REPLY)[0]
        eog = [t for t in self.model.tokenize(protocol.IM_END + protocol.ENDOFTEXT) if self.model.is_eog(t)]
        self._quiet_ids = np.array([self._no_reply_first, *eog])
        self._unsayable = self.model.unsayable()
        self.reset(protocol.SYSTEM_PROMPT)

    @staticmethod
    def _describe_device(gpu: bool, n_layers: int) -> str:
        if not gpu or n_layers == 0:
            return "CPU"
        info = system_info()
        backend = next((b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "HIP", "SYCL") if b in info), "GPU")
        return f"{backend} ({n_layers} layers offloaded)"

    # ---- dialogue state -----------------------------------------------------------------------
    def reset(self, system_prompt: str) -> None:
        self.ctx.clear()
        self.n_past = 0  # next position (a position counter, not a token count)
        self.n_cells = 0  # KV cells in use
        self.turns: list[_TurnRecord] = []  # turns still (partly) in the cache, oldest first
        self.turns_seen = 0
        self.pending = protocol.system_turn(system_prompt)  # text evaluated at the head of the next step
        self.evicted_turns = 0
        self._transcript = ""  # full_reeval only: the rendered history so far
        self._all_images: list[np.ndarray] = []

    # ---- eviction -----------------------------------------------------------------------------
    def _evict(self, need: int) -> None:
        """Free cells until ``need`` more fit, oldest first; the current turn is never touched."""
        free = lambda: self.n_ctx - self.n_cells  # noqa: E731
        self.turns = [t for t in self.turns if not t.removed]  # a day-long stream must not grow this list
        closed = [t for t in self.turns if t.end is not None and not t.removed]
        for t in closed:  # 1. frames of old turns
            if free() >= need:
                return
            if not t.frames_dropped:
                for sp in t.images:
                    self.ctx.remove(sp.start, sp.end)
                    self.n_cells -= sp.cells
                    t.cells -= sp.cells
                t.frames_dropped = True
                self.evicted_turns += 1
        for dialogue in (False, True):  # 2. silent turns, then 3. dialogue turns
            for t in closed:
                if free() >= need:
                    return
                if t.removed or t.dialogue != dialogue:
                    continue
                self.ctx.remove(t.start, t.end)
                self.n_cells -= t.cells
                t.removed = True
        if free() < need:
            raise BackendError(f"a single turn needs {need} context cells but only {self.n_ctx} exist; "
                               "raise n_ctx or lower tokens per frame")

    # ---- one step -----------------------------------------------------------------------------
    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = 128) -> BackendStep:
        t_start = time.perf_counter()
        user = protocol.user_turn(len(images), text, self.proj.marker) + protocol.assistant_prefix(must_reply)
        if self.settings.full_reeval:
            # The stock chat-handler way: forget the cache, re-render the history, re-encode every frame.
            self._transcript += self.pending
            self._all_images += list(images)
            self.ctx.clear()
            self.n_past = self.n_cells = 0
            self.turns = []
            head, images = self._transcript, list(self._all_images)
            self._transcript += user
        else:
            head = self.pending
        n_head_tokens = len(self.model.tokenize(head))
        prompt = head + user
        try:
            chunks = Chunks(self.proj, prompt, list(images))
        except RuntimeError as e:
            raise BackendError(str(e)) from e
        timings = StepTimings()
        with chunks:
            reserve = self.settings.reserve or max(16, max_new_tokens + 8)
            self._evict(chunks.n_tokens + reserve)
            # The head (previous tail / system prompt) closes the previous turn: record the boundary.
            turn_start = self.n_past + n_head_tokens
            if self.turns:
                prev = self.turns[-1]
                prev.end = turn_start
                prev.cells += n_head_tokens
            rec = _TurnRecord(index=self.turns_seen, start=turn_start, dialogue=bool(text.strip()))
            pos = self.n_past
            last = len(chunks.info) - 1
            for i, ci in enumerate(chunks.info):
                t0 = time.perf_counter()
                try:
                    new_pos = chunks.eval_chunk(self.ctx, i, pos, logits_last=(i == last))
                except RuntimeError as e:
                    raise BackendError(str(e)) from e
                dt = (time.perf_counter() - t0) * 1e3
                if ci.is_image:
                    timings.encode_ms += dt
                    rec.images.append(_Span(pos, new_pos, ci.n_tokens))
                else:
                    timings.prefill_ms += dt
                pos = new_pos
            rec.cells = chunks.n_tokens - n_head_tokens
            self.n_cells += chunks.n_tokens
            self.n_past = pos
        self.turns.append(rec)
        self.turns_seen += 1

        logits = self.ctx.last_logits(self.model.n_vocab)
        self.last_logits = logits  # the decision logits, kept for parity checks and diagnostics
        nr = self._no_reply_first
        quiet = self._quiet_ids  # first tokens that mean "say nothing": NO (…REPLY) and end-of-turn
        biased = logits.copy()
        biased[self._unsayable] = -np.inf
        biased[quiet] -= talkativeness
        margin = float(np.max(np.delete(biased, quiet)) - np.max(biased[quiet]))  # > 0: it speaks
        t0 = time.perf_counter()
        if not must_reply and self.settings.instant_silence and int(np.argmax(biased)) == nr:
            text_out, silent = protocol.NO_REPLY, True
            self.pending = protocol.assistant_tail(protocol.NO_REPLY)
        else:
            reply_start, cells_before = self.n_past, self.n_cells
            tokens = self._decode(biased, max_new_tokens)
            text_out = self.model.detokenize(tokens)  # unstripped: the history holds exactly these bytes
            silent = protocol.is_silence(text_out) or not text_out.strip()  # an empty turn says nothing
            self.pending = protocol.IM_END + "\n"
            if self.model.tokenize(text_out, parse_special=False) != tokens:
                # Greedy decoding can produce a non-canonical tokenization (or split a UTF-8 character).
                # The model was trained on re-tokenized text, and a re-rendered history (remote backends,
                # the reference client) would hold the canonical form, so replace the sampled tokens.
                self.ctx.remove(reply_start, -1)
                self.turns[-1].cells -= self.n_cells - cells_before
                self.n_past, self.n_cells = reply_start, cells_before
                self.pending = protocol.assistant_tail(text_out)
            rec.dialogue = rec.dialogue or not silent
        if self.settings.full_reeval and self.pending == protocol.IM_END + "\n":
            self._transcript += text_out  # the reply tokens are in the cache; keep the text in step
        timings.decode_ms = (time.perf_counter() - t0) * 1e3
        timings.total_ms = (time.perf_counter() - t_start) * 1e3
        return BackendStep(text=text_out, silent=silent, timings=timings, n_tokens=self.n_cells, n_ctx=self.n_ctx,
                           evicted_turns=self.evicted_turns, first_token_margin=margin)

    def _decode(self, first_logits: np.ndarray, max_new_tokens: int) -> list[int]:
        """Greedy decoding; each sampled token is evaluated at an explicit position.

        The end-of-turn token itself is not evaluated: ``<|im_end|>\\n`` is prepended to the next
        step instead, which is byte-identical to re-rendering the history with the chat template.
        """
        out: list[int] = []
        logits = first_logits
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            if self.model.is_eog(tok):
                return out
            out.append(tok)
            if len(out) == max_new_tokens:
                break
            if self.n_cells + 1 > self.n_ctx:
                break
            self.ctx.decode_tokens([tok], self.n_past)
            self.n_past += 1
            self.n_cells += 1
            self.turns[-1].cells += 1
            logits = self.ctx.last_logits(self.model.n_vocab)
            logits[self._unsayable] = -np.inf
        # Cut at max_new_tokens: the last sampled token was not evaluated; evaluate it so the cache
        # holds exactly the reply text the history says it holds.
        if out and (len(out) == max_new_tokens or self.n_cells + 1 > self.n_ctx) and self.n_cells < self.n_ctx:
            self.ctx.decode_tokens([out[-1]], self.n_past, logits_last=False)
            self.n_past += 1
            self.n_cells += 1
            self.turns[-1].cells += 1
        return out

    def close(self) -> None:
        for obj in ("proj", "ctx", "model"):
            o = getattr(self, obj, None)
            if o is not None:
                o.close()

    def __enter__(self) -> LlamaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
