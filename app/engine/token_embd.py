"""The text model's input embeddings, read from its GGUF, so a whole turn can go to llama.cpp as one batch.

llama.cpp refuses a batch that mixes token ids with embeddings, and a Qwen2.5-VL turn is both: text,
then frames, then text. Evaluated as separate batches, each small text batch re-reads every weight of
the model (on the 3B in BF16 on a CPU, three calls for a handful of text tokens took 1.1 s of a 5.5 s
step: docs/benchmarks.md §2). Feeding
the text as embeddings instead lets one batch carry the turn. An input embedding is just a row of
``token_embd.weight``; llama.cpp's graph does the same lookup (``get_rows``, no scaling for qwen2vl),
so the logits agree with the token path (tests/engine/test_one_pass.py, for every table type).

The matrix is memory-mapped (llama.cpp maps the same file, so the pages are shared) and rows are
dequantized with gguf-py's reference dequantizers, only for tokens actually seen, and kept: a stream
repeats the same few dozen header tokens every turn.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from app.modelhub.validate import TensorLocation


class TokenEmbeddings:
    """Rows of ``token_embd.weight`` as float32, looked up by token id."""

    def __init__(self, path: Path, where: TensorLocation, max_rows: int = 8192) -> None:
        self.qtype = gguf.GGMLQuantizationType(where.ggml_type)
        self.n_vocab, self.n_embd = where.shape
        block, block_bytes = gguf.GGML_QUANT_SIZES[self.qtype]
        self.row_bytes = self.n_embd // block * block_bytes
        if self.row_bytes * self.n_vocab != where.n_bytes:
            raise ValueError(f"{path}: token_embd holds {where.n_bytes} bytes, not {self.n_vocab} rows of {self.row_bytes}")
        self._raw = np.memmap(path, dtype=np.uint8, mode="r", offset=where.offset, shape=(self.n_vocab, self.row_bytes))
        self._rows: dict[int, np.ndarray] = {}
        self.max_rows = max_rows
        self._dequantize(np.zeros(1, np.int64))  # a type gguf-py cannot read fails here, at load, not mid-stream

    def _dequantize(self, ids: np.ndarray) -> np.ndarray:
        rows = gguf.quants.dequantize(np.ascontiguousarray(self._raw[ids]), self.qtype)
        return np.asarray(rows, dtype=np.float32).reshape(len(ids), self.n_embd)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """``len(ids) × n_embd`` float32 input embeddings."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise ValueError(f"token id out of range 0..{self.n_vocab - 1}")
        missing = sorted({int(t) for t in ids} - self._rows.keys())
        if missing:
            if len(self._rows) + len(missing) > self.max_rows:
                self._rows.clear()  # a bound, not a policy: real streams stay far below it
            self._rows.update(zip(missing, self._dequantize(np.array(missing))))
        if not ids.size:
            return np.zeros((0, self.n_embd), dtype=np.float32)
        return np.stack([self._rows[int(t)] for t in ids])

    def close(self) -> None:
        """Drop the mapping (numpy unmaps when the last view goes)."""
        self._rows.clear()
        self._raw = None  # type: ignore[assignment]
