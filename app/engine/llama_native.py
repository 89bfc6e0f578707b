"""Owning wrappers over llama-cpp-python's raw llama.cpp and libmtmd bindings.

llama-cpp-python's high-level ``Llama`` keeps its own token bookkeeping, which is wrong after an
image (M-RoPE positions advance by max(nx, ny), not by the token count) and cannot remove a range
of the cache. So the engine talks to the C API directly, through these few classes that each own
one C object and free it exactly once. Measured facts behind the choices: docs/llamacpp.md.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from app.modelhub.llama_lib import load_backends

log = logging.getLogger("duet.llama")

_init_lock = threading.Lock()
_initialised = False


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:  # pragma: no cover - C callback
    try:
        msg = text.decode("utf-8", "replace").rstrip()
    except Exception:
        return
    if msg:
        # llama.cpp's warnings are mostly load-time notes about the model; keep them out of the user's way.
        (log.info if level == 3 else log.warning if level == 4 else log.debug)(msg)


def init_backend() -> None:
    """Initialise llama.cpp once and route its (very chatty) logs into Python logging."""
    global _initialised
    with _init_lock:
        if _initialised:
            return
        load_backends()  # the portable build's CPU (and GPU) libraries; OMP_WAIT_POLICY before them
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_log_callback, ctypes.c_void_p(0))
        _initialised = True


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


class Model:
    """A loaded text model (``llama_model``) and its vocabulary."""

    def __init__(self, path: Path, n_gpu_layers: int = 0) -> None:
        init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise RuntimeError(f"{path}: llama.cpp could not load this model (see the log for the reason)")
        self.vocab = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(self.ptr)
        # Width of one input embedding (what the vision projector outputs): wider than n_embd for
        # models with deep-stacked vision features, equal for Qwen2.5-VL.
        self.n_embd_inp = llama_cpp.llama_model_n_embd_inp(self.ptr)

    def unsayable(self) -> np.ndarray:
        """Token ids a reply can never contain: control tokens (except end-of-turn) and unused padding.

        A trained model never samples them; a random or under-trained one does, and they would
        detokenize to nothing and leave an image placeholder in the history.
        """
        bad = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
        return np.array([t for t in range(self.n_vocab)
                         if llama_cpp.llama_vocab_get_attr(self.vocab, t) & bad and not self.is_eog(t)], dtype=np.int64)

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, parse_special)
        if n < 0:
            raise RuntimeError("tokenize: buffer too small")  # cannot happen: ≤ 1 token per byte
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


# The KV cache's element type. F16 is llama.cpp's default and Duet's. BF16 is the dtype MMDuet2 was
# trained in and transformers keeps its cache in, so the like-for-like comparison with it uses BF16
# (docs/benchmarks.md §2); on a CPU with AVX-512 BF16 ggml multiplies it natively. F32 is for parity checks.
KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "bf16": 30, "f32": llama_cpp.GGML_TYPE_F32}  # 30: ggml.h's GGML_TYPE_BF16


@dataclass(frozen=True)
class ContextSettings:
    """A context's native parameters. ``n_ctx`` has no default here: the user's (app.core.config) reaches it."""

    n_ctx: int
    n_batch: int = 1024
    n_threads: int = 0  # 0 = llama.cpp's choice
    flash_attn: int = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    kv_type: str = "f16"  # f16 | bf16 | f32 (parity checks; 2× the memory). See KV_TYPES
    offload_kqv: bool = True


class Context:
    """A ``llama_context``: the KV cache one dialogue lives in, plus a one-token batch for decoding."""

    def __init__(self, model: Model, s: ContextSettings) -> None:
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = s.n_ctx
        p.n_batch = s.n_batch
        p.n_ubatch = s.n_batch
        if s.n_threads > 0:
            p.n_threads = s.n_threads
            p.n_threads_batch = s.n_threads
        p.flash_attn_type = s.flash_attn
        p.offload_kqv = s.offload_kqv
        p.no_perf = True
        if s.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {s.kv_type!r}")
        p.type_k = p.type_v = KV_TYPES[s.kv_type]
        self.model = model
        self.ptr = llama_cpp.llama_init_from_model(model.ptr, p)
        if not self.ptr:
            raise RuntimeError(f"could not create a llama.cpp context of {s.n_ctx} tokens (out of memory?)")
        self.n_ctx = llama_cpp.llama_n_ctx(self.ptr)
        self.n_batch = s.n_batch
        self.flash_attn = s.flash_attn  # as asked (a reference context built beside this one must match it)
        self.mem = llama_cpp.llama_get_memory(self.ptr)
        self._batch = llama_cpp.llama_batch_init(max(1, s.n_batch), 0, 1)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)

    def remove(self, p0: int, p1: int) -> bool:
        """Drop every cell of sequence 0 whose position lies in [p0, p1)."""
        return bool(llama_cpp.llama_memory_seq_rm(self.mem, 0, p0, p1))

    def decode_tokens(self, tokens: list[int], pos: int, logits_last: bool = True) -> None:
        """Evaluate text tokens at explicit consecutive positions (never ``llama_batch_get_one``)."""
        b = self._batch
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start:start + self.n_batch]
            b.n_tokens = len(part)
            for i, t in enumerate(part):
                b.token[i] = t
                b.pos[i] = pos + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 0
            if logits_last and start + len(part) == len(tokens):
                b.logits[len(part) - 1] = 1
            rc = llama_cpp.llama_decode(self.ptr, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}): the context is full or out of memory")

    def decode_embeddings(self, embd: np.ndarray, pos: np.ndarray, logits_last: bool = True) -> None:
        """Evaluate input embeddings (``n × n_embd_inp`` float32) at M-RoPE positions ``pos`` (``4 × n``:
        the t, y, x and z sections, as libmtmd lays them out), in batches of ``n_batch``.

        This is how a whole turn — text and frames — goes in at once: llama.cpp's batches hold either
        token ids or embeddings, never both, so the text comes as embeddings too (app.engine.token_embd).
        The ``llama_batch`` is built over numpy arrays here because ``llama_batch_init`` sizes ``pos`` for
        one position per entry, and M-RoPE embeddings need four (section-major)."""
        n = len(embd)
        if embd.dtype != np.float32 or embd.ndim != 2 or pos.shape != (4, n):
            raise ValueError(f"need n × n_embd float32 embeddings and 4 × n positions, got {embd.shape} {embd.dtype}, {pos.shape}")
        seq0 = (llama_cpp.llama_seq_id * 1)(0)
        for start in range(0, n, self.n_batch):
            m = min(self.n_batch, n - start)
            e = np.ascontiguousarray(embd[start:start + m])
            p = np.ascontiguousarray(pos[:, start:start + m], dtype=np.int32)  # section-major
            n_seq = np.ones(m, dtype=np.int32)
            seq_ids = (ctypes.POINTER(llama_cpp.llama_seq_id) * m)(*([seq0] * m))
            logits = np.zeros(m, dtype=np.int8)
            if logits_last and start + m == n:
                logits[-1] = 1
            b = llama_cpp.llama_batch(
                n_tokens=m, token=None, embd=e.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                pos=p.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
                n_seq_id=n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                seq_id=ctypes.cast(seq_ids, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id))),
                logits=logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
            rc = llama_cpp.llama_decode(self.ptr, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}): the context is full or out of memory")

    def last_logits(self, n_vocab: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.ptr, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self.ptr)
            self.ptr = None


class Projector:
    """A libmtmd context: the vision encoder (mmproj) bound to a text model."""

    def __init__(self, path: Path, model: Model, n_threads: int, use_gpu: bool, flash_attn: int,
                 min_tokens: int = 0) -> None:
        p = mtmd_cpp.mtmd_context_params_default()
        p.use_gpu = use_gpu
        p.print_timings = False
        if n_threads > 0:
            p.n_threads = n_threads
        p.flash_attn_type = flash_attn
        p.warmup = False
        if min_tokens:
            p.image_min_tokens = min_tokens
        self.ptr = mtmd_cpp.mtmd_init_from_file(str(path).encode(), model.ptr, p)
        if not self.ptr:
            raise RuntimeError(f"{path}: libmtmd could not load this vision projector (see the log)")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        self.n_embd = model.n_embd_inp  # floats per image token the encoder outputs

    def close(self) -> None:
        if self.ptr:
            mtmd_cpp.mtmd_free(self.ptr)
            self.ptr = None


@dataclass
class ChunkInfo:
    is_image: bool
    n_tokens: int  # KV cells it takes
    n_pos: int  # positions it advances


class Chunks:
    """A tokenized prompt (text and image chunks) owning its bitmaps."""

    def __init__(self, proj: Projector, text: str, images: list[np.ndarray]) -> None:
        self.proj = proj
        self.ptr = mtmd_cpp.mtmd_input_chunks_init()
        bitmaps = []
        try:
            for img in images:
                img = np.ascontiguousarray(img, dtype=np.uint8)
                h, w = img.shape[:2]
                bm = mtmd_cpp.mtmd_bitmap_init(w, h, img.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
                if not bm:
                    raise RuntimeError(f"could not wrap a {w}×{h} frame for libmtmd")
                bitmaps.append(bm)
            arr = (mtmd_cpp.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            data = text.encode("utf-8")  # kept alive until mtmd_tokenize returns
            inp = mtmd_cpp.mtmd_input_text(text=data, text_len=len(data), add_special=False, parse_special=True)
            rc = mtmd_cpp.mtmd_tokenize(proj.ptr, self.ptr, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                raise RuntimeError(f"mtmd_tokenize failed ({rc}): marker/image count mismatch or bad image")
        finally:
            for bm in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bm)
        self.info: list[ChunkInfo] = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(self.ptr)):
            c = mtmd_cpp.mtmd_input_chunks_get(self.ptr, i)
            is_image = mtmd_cpp.mtmd_input_chunk_get_type(c) != mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT
            self.info.append(ChunkInfo(is_image, mtmd_cpp.mtmd_input_chunk_get_n_tokens(c),
                                       mtmd_cpp.mtmd_input_chunk_get_n_pos(c)))

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.info)

    def eval_chunk(self, ctx: Context, i: int, n_past: int, logits_last: bool) -> int:
        """Evaluate chunk ``i`` at position ``n_past`` (encoding it first if it is an image); returns the new
        position. The engine uses :meth:`encode_image` + :meth:`decode_image` for images instead, to time
        and cache the vision encoder apart; this one-call form is for references and tests."""
        c = mtmd_cpp.mtmd_input_chunks_get(self.ptr, i)
        new = llama_cpp.llama_pos(n_past)
        rc = mtmd_cpp.mtmd_helper_eval_chunk_single(self.proj.ptr, ctx.ptr, c, n_past, 0, ctx.n_batch,
                                                    logits_last, ctypes.byref(new))
        if rc != 0:
            raise RuntimeError(f"evaluating prompt chunk {i} failed ({rc}): the context is full or out of memory")
        # The helper's text path adds to *new_n_past instead of setting it; the chunk's own n_pos is
        # the reliable advance (max(nx, ny) for a Qwen image, the token count for text).
        return n_past + self.info[i].n_pos

    def text_tokens(self, i: int) -> np.ndarray:
        """Text chunk ``i``'s token ids."""
        if self.info[i].is_image:
            raise ValueError(f"chunk {i} is an image, not text")
        n = ctypes.c_size_t(0)
        ptr = mtmd_cpp.mtmd_input_chunk_get_tokens_text(mtmd_cpp.mtmd_input_chunks_get(self.ptr, i), ctypes.byref(n))
        return np.ctypeslib.as_array(ptr, shape=(n.value,)).astype(np.int32) if n.value else np.zeros(0, np.int32)

    def positions(self, i: int, n_past: int) -> np.ndarray:
        """Chunk ``i``'s M-RoPE positions at ``n_past``, ``4 × n_tokens`` (t, y, x, z), as llama.cpp uses them:
        a text token's position in all four sections; an image's from libmtmd (same t, its rows and columns)."""
        n = self.info[i].n_tokens
        if not self.info[i].is_image:
            return np.broadcast_to(np.arange(n_past, n_past + n, dtype=np.int32), (4, n)).copy()
        image = mtmd_cpp.mtmd_input_chunk_get_tokens_image(mtmd_cpp.mtmd_input_chunks_get(self.ptr, i))
        out = (mtmd_cpp.mtmd_decoder_pos * n)()
        mtmd_cpp.mtmd_helper_image_get_decoder_pos(image, n_past, out)
        txyz = np.ctypeslib.as_array(ctypes.cast(out, ctypes.POINTER(ctypes.c_uint32)), shape=(n, 4))  # t, x, y, z
        return np.ascontiguousarray(txyz[:, [0, 2, 1, 3]].T, dtype=np.int32)

    def encode_image(self, i: int) -> np.ndarray:
        """Run the vision encoder alone on image chunk ``i``; returns a copy of its embeddings
        (``n_tokens × n_embd_inp`` float32), which :meth:`decode_image` feeds to the text model."""
        if not self.info[i].is_image:
            raise ValueError(f"chunk {i} is text, not an image")
        c = mtmd_cpp.mtmd_input_chunks_get(self.ptr, i)
        rc = mtmd_cpp.mtmd_encode_chunk(self.proj.ptr, c)
        if rc != 0:
            raise RuntimeError(f"the vision encoder failed on image chunk {i} ({rc}): out of memory?")
        n = self.info[i].n_tokens * self.proj.n_embd
        return np.ctypeslib.as_array(mtmd_cpp.mtmd_get_output_embd(self.proj.ptr), shape=(n,)).copy()

    def decode_image(self, ctx: Context, i: int, n_past: int, embd: np.ndarray) -> int:
        """The text model's pass over image chunk ``i``'s embeddings ``embd`` (from :meth:`encode_image`, or
        a cache of it) at position ``n_past``, with the chunk's M-RoPE positions; returns the new position."""
        if embd.dtype != np.float32 or embd.size != self.info[i].n_tokens * self.proj.n_embd:
            raise ValueError(f"image chunk {i} needs {self.info[i].n_tokens} × {self.proj.n_embd} float32 "
                             f"embeddings, got {embd.size} {embd.dtype}")
        embd = np.ascontiguousarray(embd)
        c = mtmd_cpp.mtmd_input_chunks_get(self.ptr, i)
        new = llama_cpp.llama_pos(n_past)
        rc = mtmd_cpp.mtmd_helper_decode_image_chunk(
            self.proj.ptr, ctx.ptr, c, embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n_past, 0,
            ctx.n_batch, ctypes.byref(new), mtmd_cpp.mtmd_helper_post_decode_callback(), None)
        if rc != 0:
            raise RuntimeError(f"decoding image chunk {i} failed ({rc}): the context is full or out of memory")
        return n_past + self.info[i].n_pos

    def close(self) -> None:
        if self.ptr:
            mtmd_cpp.mtmd_input_chunks_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> Chunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
