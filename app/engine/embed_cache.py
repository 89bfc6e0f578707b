"""Vision embeddings of frames already encoded, so a screen that does not change is not encoded again.

The vision encoder is the largest part of a step on a CPU (about two thirds on the 3B shape, see
docs/benchmarks.md), and a static screen or a paused video sends the same picture turn after turn.
The engine keys each frame by a hash of its pixels *after* the session's resize (the exact input
the encoder sees, shape included), and reuses the stored embeddings on a hit: the text model's pass
over them is unchanged, so an exact hit gives bit-identical logits.

Optionally (``near_threshold`` > 0, off by default and meant for screens, not cameras) a frame whose
*mean absolute difference* from one of the last few stored frames of the same size is at most the
threshold, in 8-bit grey levels on a 4× sub-sampled copy, reuses that frame's embeddings too. A
camera's sensor noise is typically a level or more, and a small moving object in a large frame changes
the mean by less than that, so the option would hide real motion there; on a screen capture a blinking
cursor or a ticking clock changes a few hundred pixels of a million, far below one level on average.
Measured effect on answer quality (PAUC on synthetic sets): docs/benchmarks.md §1 — ≤ 1 level cost
nothing there, ≤ 4 started to miss changes.

Memory is bounded: entries are evicted least recently used once their embeddings exceed
``max_bytes``. Hand-written (an ``OrderedDict``) rather than ``functools.lru_cache`` because the bound
is in bytes, not entries, and hits must be counted per frame.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

NEAR_CANDIDATES = 4  # near-identical search: only the most recently used entries of the same shape
SUBSAMPLE = 4


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0  # exact (same pixels)
    near_hits: int = 0  # within the near-identical threshold
    entries: int = 0
    bytes: int = 0

    @property
    def hit_rate(self) -> float:
        return (self.hits + self.near_hits) / self.lookups if self.lookups else 0.0


@dataclass
class _Entry:
    embd: np.ndarray
    thumb: np.ndarray  # int16, sub-sampled, for the near-identical comparison
    shape: tuple[int, ...]


def frame_key(image: np.ndarray) -> bytes:
    """Content hash of a frame as the encoder will see it (pixels and shape)."""
    img = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((img.shape, str(img.dtype))).encode())
    h.update(memoryview(img).cast("B"))
    return h.digest()


def _thumb(image: np.ndarray) -> np.ndarray:
    return image[::SUBSAMPLE, ::SUBSAMPLE].astype(np.int16)


class EmbeddingCache:
    """A byte-bounded LRU map from frame content to vision embeddings. Not thread-safe (one per backend)."""

    def __init__(self, max_bytes: int, near_threshold: float = 0.0) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be ≥ 0, got {max_bytes}")
        if near_threshold < 0:
            raise ValueError(f"near_threshold must be ≥ 0 grey levels, got {near_threshold}")
        self.max_bytes = max_bytes
        self.near_threshold = near_threshold
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, image: np.ndarray) -> tuple[bytes, np.ndarray | None]:
        """(key, embeddings or None). Counts a lookup; an exact hit first, then a near-identical one."""
        key = frame_key(image)
        self.stats.lookups += 1
        e = self._entries.get(key)
        if e is not None:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return key, e.embd
        if self.near_threshold > 0:
            thumb = _thumb(image)
            seen = 0
            for k in reversed(self._entries):
                cand = self._entries[k]
                if cand.shape != image.shape:
                    continue
                if float(np.abs(cand.thumb - thumb).mean()) <= self.near_threshold:
                    self._entries.move_to_end(k)
                    self.stats.near_hits += 1
                    return key, cand.embd
                seen += 1
                if seen == NEAR_CANDIDATES:
                    break
        return key, None

    def put(self, key: bytes, image: np.ndarray, embd: np.ndarray) -> None:
        if not self.enabled or embd.nbytes > self.max_bytes:
            return
        thumb = _thumb(image) if self.near_threshold > 0 else np.empty(0, np.int16)
        old = self._entries.pop(key, None)
        if old is not None:
            self.stats.bytes -= old.embd.nbytes + old.thumb.nbytes
        self._entries[key] = _Entry(embd, thumb, tuple(image.shape))
        self.stats.bytes += embd.nbytes + thumb.nbytes
        while self.stats.bytes > self.max_bytes:
            _, ev = self._entries.popitem(last=False)
            self.stats.bytes -= ev.embd.nbytes + ev.thumb.nbytes
        self.stats.entries = len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.stats = CacheStats()
