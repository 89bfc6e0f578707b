"""The in-process MMDuet2 engine on llama.cpp + libmtmd.

Per step it evaluates only what is new on top of the KV cache: the tail of the previous assistant
turn, the new user turn (frames encoded once, here and never again; a frame identical to one already
encoded reuses its embeddings, see :mod:`app.engine.embed_cache`) and the generation prompt.
A step is three phases, each a method: **prefill** (evict if needed, encode the frames, evaluate
the turn: text and frames in one batch of embeddings, see :mod:`app.engine.token_embd`), **decide**
(speak or stay silent, read from the first token's logits: "instant silence"; a silent step runs no
decode loop, and its ``NO REPLY<|im_end|>`` tokens ride in the next step's batch) and **reply** (greedy decoding under :class:`~app.engine.reply_guard.ReplyGuard`).

The context is bounded by evicting, oldest first, (1) frames, (2) whole turns that carry no dialogue
(silent, no user text), (3) dialogue turns — never the system prompt. Cells are removed with
``llama_memory_seq_rm``; positions keep growing (M-RoPE allows gaps; shifting would abort).

The reference modes that tests and benchmarks compare against (token-by-token silence, full
re-evaluation) live in :mod:`app.engine.llama_reference`, outside this production path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core import protocol
from app.core.config import DEFAULT_MAX_NEW_TOKENS, BackendSettings, resolve_threads
from app.core.types import StepTimings
from app.engine.backend import BackendError, BackendStep
from app.engine.embed_cache import EmbeddingCache
from app.engine.llama_native import (
    Chunks,
    Context,
    ContextSettings,
    Model,
    Projector,
    gpu_offload_supported,
    system_info,
)
from app.engine.reply_guard import ReplyGuard, trim_to_sentence
from app.engine.token_embd import TokenEmbeddings
from app.modelhub.validate import ModelFileError, check_pair

log = logging.getLogger("duet.engine")


@dataclass(frozen=True)
class LlamaSettings(BackendSettings):
    """The user's :class:`~app.core.config.BackendSettings` (n_ctx, threads, GPU layers, flash attention, CPU
    library: declared there, once) plus the engine's own knobs, which tests and benchmarks turn."""

    mmproj_on_gpu: bool = True
    kv_type: str = "f16"  # f16 | bf16 | f32, see llama_native.KV_TYPES
    reserve: int = 0  # cells kept free beyond max_new_tokens (0 = automatic)
    embed_cache_mib: int = 64  # vision embeddings kept for frames seen again (0 = off); ~1 MiB a 3B frame
    near_identical: float = 0.0  # > 0: also reuse for frames this close (grey levels, see embed_cache); 0 = off
    guard: ReplyGuard = field(default_factory=ReplyGuard)  # reply length cap and loop guard
    one_pass: bool = True  # a turn as one batch of embeddings; False: chunk by chunk (times frames apart)

    @classmethod
    def of(cls, backend: BackendSettings, **changes: Any) -> LlamaSettings:
        """The engine's settings for the user's ``backend`` settings, with ``changes`` (no field copied by hand)."""
        base = {f.name: getattr(backend, f.name) for f in dataclasses.fields(BackendSettings)}
        return cls(**{**base, **changes})

    def flash_attn_type(self, *, on_gpu: bool, projector: bool) -> int:
        """llama.cpp's flash-attention setting for the text model or the projector.

        "auto" on a GPU is llama.cpp's own choice. On the CPU it is off for the text model and on for
        the projector: ggml's CPU flash-attention kernel walks one query row at a time, so a step over a
        long history took twice as long with it (docs/benchmarks.md §2), while the vision encoder's short
        sequences ran faster with it (§1)."""
        if self.flash_attn != "auto":
            return {"on": 1, "off": 0}[self.flash_attn]
        if on_gpu:
            return -1
        return 1 if projector else 0


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
        s = settings if settings is not None else LlamaSettings()
        s = dataclasses.replace(s, n_threads=resolve_threads(s.n_threads))  # llama.cpp's default can exceed our cores
        self.settings = s
        try:
            self.info = check_pair(model_path, mmproj_path)
        except ModelFileError as e:
            raise BackendError(str(e)) from e
        gpu = gpu_offload_supported()
        wants_gpu = s.n_gpu_layers != 0
        if wants_gpu and not gpu:
            log.warning("This llama.cpp build has no GPU support; running on the CPU. For NVIDIA GPUs rebuild "
                        "it with `make gpu` (python installer/build_llama.py --flavour cuda)")
        n_layers = (self.info.n_layers + 1 if s.n_gpu_layers < 0 else s.n_gpu_layers) if gpu else 0
        # Each native handle is registered as soon as it exists, so a failure further on (a context
        # too large for memory, a bad projector) frees what was already loaded.
        with ExitStack() as stack:
            try:
                self.model = stack.enter_context(closing(Model(Path(model_path), n_gpu_layers=n_layers)))
                self.ctx = stack.enter_context(closing(Context(self.model, ContextSettings(
                    n_ctx=s.n_ctx, n_threads=s.n_threads, flash_attn=s.flash_attn_type(on_gpu=n_layers > 0, projector=False),
                    kv_type=s.kv_type))))
                self.proj = stack.enter_context(closing(Projector(
                    Path(mmproj_path), self.model, s.n_threads, use_gpu=gpu and s.mmproj_on_gpu,
                    flash_attn=s.flash_attn_type(on_gpu=gpu and s.mmproj_on_gpu, projector=True))))
            except RuntimeError as e:
                raise BackendError(str(e)) from e
            self.token_embd = self._token_embeddings(Path(model_path))
            self._handles = stack.pop_all()
        self.device = self._describe_device(gpu, n_layers)
        self.n_ctx = self.ctx.n_ctx
        self.embed_cache = EmbeddingCache(s.embed_cache_mib * 2**20, s.near_identical)
        self.guard = s.guard
        self.frames_encoded = 0  # frames the vision encoder ran on, over the backend's life
        self._no_reply_first = self.model.tokenize(protocol.NO_REPLY)[0]
        eog = [t for t in self.model.tokenize(protocol.IM_END + protocol.ENDOFTEXT) if self.model.is_eog(t)]
        self._quiet_ids = np.array([self._no_reply_first, *eog])
        self._unsayable = self.model.unsayable()
        self.reset(protocol.SYSTEM_PROMPT)

    def _token_embeddings(self, model_path: Path) -> TokenEmbeddings | None:
        """The input-embedding table for one-pass turns, or None (chunk by chunk) when asked so or when
        this model's text rows cannot share a batch with its image rows."""
        where = self.info.token_embd
        if not self.settings.one_pass or where is None or where.shape[1] != self.model.n_embd_inp:
            return None
        try:
            return TokenEmbeddings(model_path, where)
        except (ValueError, NotImplementedError, OSError) as e:  # a quantization gguf-py cannot read
            log.warning("evaluating turns chunk by chunk: %s", e)
            return None

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
        self.turns_frames_dropped = 0

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
                self.turns_frames_dropped += 1
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

    # ---- one step: prefill, decide, reply -------------------------------------------------------
    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> BackendStep:
        t_start = time.perf_counter()
        timings = StepTimings()
        rec, reused = self._prefill(list(images), text, must_reply, max_new_tokens, timings)
        biased, margin = self._decision_logits(talkativeness)
        t0 = time.perf_counter()
        if not must_reply and self._decides_silence(biased):
            text_out, silent = protocol.NO_REPLY, True
            self.pending = protocol.assistant_tail(protocol.NO_REPLY)
        else:
            text_out, silent = self._reply(biased, max_new_tokens)
            rec.dialogue = rec.dialogue or not silent
        self._after_step(text_out)
        timings.decode_ms = (time.perf_counter() - t0) * 1e3
        timings.total_ms = (time.perf_counter() - t_start) * 1e3
        return BackendStep(text=text_out, silent=silent, timings=timings, kv_cells=self.n_cells, n_ctx=self.n_ctx,
                           turns_frames_dropped=self.turns_frames_dropped, first_token_margin=margin, frames_reused=reused)

    def _prompt_head(self, images: list[np.ndarray], user: str) -> tuple[str, list[np.ndarray]]:
        """What to evaluate before the new user turn, and the frames of the prompt: here the previous
        turn's tail (or the system prompt) and just the new frames."""
        return self.pending, images

    def _prefill(self, images: list[np.ndarray], text: str, must_reply: bool, max_new_tokens: int,
                 timings: StepTimings) -> tuple[_TurnRecord, int]:
        """Phase 1: make room, then evaluate the head and the new user turn; returns the turn's record and
        how many frames reused cached embeddings. Fills the vision, image and text prefill timings."""
        user = protocol.user_turn(len(images), text, self.proj.marker) + protocol.assistant_prefix(must_reply)
        head, images = self._prompt_head(images, user)
        n_head_tokens = len(self.model.tokenize(head))
        try:
            chunks = Chunks(self.proj, head + user, images)
        except RuntimeError as e:
            raise BackendError(str(e)) from e
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
            evaluate = self._eval_one_pass if self.token_embd is not None else self._eval_chunked
            try:
                self.n_past, reused = evaluate(chunks, images, self.n_past, rec, timings)
            except RuntimeError as e:
                raise BackendError(str(e)) from e
            rec.cells = chunks.n_tokens - n_head_tokens
            self.n_cells += chunks.n_tokens
        self.turns.append(rec)
        self.turns_seen += 1
        return rec, reused

    def _eval_one_pass(self, chunks: Chunks, images: list[np.ndarray], pos: int, rec: _TurnRecord,
                       timings: StepTimings) -> tuple[int, int]:
        """Evaluate the whole prompt as one batch of embeddings (text rows looked up, frames encoded or
        reused) at their M-RoPE positions; returns the next position and the frames reused. One pass
        reads the weights once per turn instead of once per chunk (app.engine.token_embd says why)."""
        rows, positions, reused = [], [], 0
        frames = iter(images)
        for i, ci in enumerate(chunks.info):
            if ci.is_image:
                embd, hit = self._embeddings(chunks, i, next(frames), timings)
                reused += hit
                rows.append(embd.reshape(ci.n_tokens, -1))
                rec.images.append(_Span(pos, pos + ci.n_pos, ci.n_tokens))
            else:
                rows.append(self.token_embd.lookup(chunks.text_tokens(i)))
            positions.append(chunks.positions(i, pos))
            pos += ci.n_pos
        t0 = time.perf_counter()
        self.ctx.decode_embeddings(np.concatenate(rows), np.concatenate(positions, axis=1), logits_last=True)
        timings.prefill_ms += (time.perf_counter() - t0) * 1e3
        return pos, reused

    def _eval_chunked(self, chunks: Chunks, images: list[np.ndarray], pos: int, rec: _TurnRecord,
                      timings: StepTimings) -> tuple[int, int]:
        """Evaluate the prompt chunk by chunk (text as token ids, each frame's embeddings apart): one pass
        of the model per chunk, slower, but it times the frames' pass apart from the text's."""
        reused = 0
        last = len(chunks.info) - 1
        frames = iter(images)
        for i, ci in enumerate(chunks.info):
            if ci.is_image:
                embd, hit = self._embeddings(chunks, i, next(frames), timings)
                reused += hit
                t0 = time.perf_counter()
                new_pos = chunks.decode_image(self.ctx, i, pos, embd)
                timings.image_prefill_ms += (time.perf_counter() - t0) * 1e3
                rec.images.append(_Span(pos, new_pos, ci.n_tokens))
            else:
                t0 = time.perf_counter()
                new_pos = chunks.eval_chunk(self.ctx, i, pos, logits_last=(i == last))
                timings.prefill_ms += (time.perf_counter() - t0) * 1e3
            pos = new_pos
        return pos, reused

    def _embeddings(self, chunks: Chunks, i: int, frame: np.ndarray, timings: StepTimings) -> tuple[np.ndarray, bool]:
        """Image chunk ``i``'s vision embeddings: from the cache when this frame was seen, else encoded."""
        cache = self.embed_cache
        key, embd = cache.get(frame) if cache.enabled else (b"", None)
        if embd is not None:
            return embd, True
        t0 = time.perf_counter()
        embd = chunks.encode_image(i)
        self.frames_encoded += 1
        timings.vision_ms += (time.perf_counter() - t0) * 1e3
        if cache.enabled:
            cache.put(key, frame, embd)
        return embd, False

    def _decision_logits(self, talkativeness: float) -> tuple[np.ndarray, float]:
        """Phase 2 input: the first token's logits with unsayable tokens masked and the talkativeness bias
        applied to the quiet tokens; and the margin (best speaking − best quiet logit; > 0: it speaks)."""
        logits = self.ctx.last_logits(self.model.n_vocab)
        self.last_logits = logits  # the decision logits, kept for parity checks and diagnostics
        quiet = self._quiet_ids  # first tokens that mean "say nothing": NO (…REPLY) and end-of-turn
        biased = logits.copy()
        biased[self._unsayable] = -np.inf
        biased[quiet] -= talkativeness
        margin = float(np.max(np.delete(biased, quiet)) - np.max(biased[quiet]))
        return biased, margin

    def _decides_silence(self, biased: np.ndarray) -> bool:
        """Phase 2: instant silence — the greedy first token is the first token of ``NO REPLY``."""
        return int(np.argmax(biased)) == self._no_reply_first

    def _reply(self, first_logits: np.ndarray, max_new_tokens: int) -> tuple[str, bool]:
        """Phase 3: decode a reply under the guard; returns (text, silent). The cache ends up holding
        exactly the reply the history will say it holds, or none of it (then it rides in ``pending``)."""
        reply_start, cells_before = self.n_past, self.n_cells
        limit = self.guard.limit(max_new_tokens)
        tokens, looped = self._decode(first_logits, limit)
        text_out = self.model.detokenize(tokens)  # unstripped: the history holds exactly these bytes
        trimmed = False
        if not looped and len(tokens) == limit and limit < max_new_tokens:  # cut by the cap
            cut = trim_to_sentence(text_out)
            trimmed, text_out = cut != text_out, cut
        silent = protocol.is_silence(text_out) or not text_out.strip()  # an empty turn says nothing
        self.pending = protocol.IM_END + "\n"
        if looped or trimmed or self.model.tokenize(text_out, parse_special=False) != tokens:
            # The cache holds the sampled tokens, which is not the reply the history will hold when the
            # guard cut it, or when greedy decoding produced a non-canonical tokenization (or split a
            # UTF-8 character): the model was trained on re-tokenized text, and a re-rendered history
            # (remote backends, the reference client) holds the canonical form. Replace them.
            self.ctx.remove(reply_start, -1)
            self.turns[-1].cells -= self.n_cells - cells_before
            self.n_past, self.n_cells = reply_start, cells_before
            self.pending = protocol.assistant_tail(text_out)
        return text_out, silent

    def _decode(self, first_logits: np.ndarray, max_new_tokens: int) -> tuple[list[int], bool]:
        """Greedy decoding; each sampled token is evaluated at an explicit position. Returns the tokens
        and whether the loop guard ended them (the repeats are then already cut off).

        The end-of-turn token itself is not evaluated: ``<|im_end|>\\n`` is prepended to the next
        step instead, which is byte-identical to re-rendering the history with the chat template.
        """
        out: list[int] = []
        logits = first_logits
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            if self.model.is_eog(tok):
                return out, False
            out.append(tok)
            if self.guard.loop_ngram and (cut := self.guard.loop_tail(out)):
                return out[:-cut], True
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
        return out, False

    def _after_step(self, text_out: str) -> None:
        """Hook for the reference modes; the engine keeps no history outside the cache."""

    def close(self) -> None:
        """Free the projector, context and model (in that order); safe to call twice."""
        handles = getattr(self, "_handles", None)
        if getattr(self, "token_embd", None) is not None:
            self.token_embd.close()
        if handles is not None:
            handles.close()

    def __enter__(self) -> LlamaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
