"""The embedding cache: exact hits by content, near-identical hits only when asked, bounded bytes."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.embed_cache import EmbeddingCache, frame_key


def frame(seed: int, shape=(56, 84, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_exact_hits_are_by_content_and_shape():
    c = EmbeddingCache(1 << 20)
    a = frame(1)
    key, hit = c.get(a)
    assert hit is None
    c.put(key, a, np.ones(10, np.float32))
    assert c.get(a.copy())[1] is not None  # same pixels, another array
    assert c.get(frame(2))[1] is None
    assert frame_key(a) != frame_key(a.reshape(84, 56, 3))  # same bytes, other shape: another picture
    b = a.copy()
    b[0, 0, 0] ^= 1  # one bit of one pixel
    assert c.get(b)[1] is None  # exact mode: not a hit
    assert c.stats.lookups == 4 and c.stats.hits == 1 and c.stats.near_hits == 0


def test_near_identical_only_below_the_threshold():
    c = EmbeddingCache(1 << 20, near_threshold=1.0)
    a = frame(1)
    c.put(c.get(a)[0], a, np.ones(10, np.float32))
    noisy = np.clip(a.astype(np.int16) + 1, 0, 255).astype(np.uint8)  # ≤ 1 grey level everywhere
    assert c.get(noisy)[1] is not None and c.stats.near_hits == 1
    moved = np.roll(a, 8, axis=1)  # the picture moved: far above one grey level on average
    assert c.get(moved)[1] is None
    assert c.get(frame(1, (56, 112, 3)))[1] is None  # another size never matches


def test_memory_is_bounded_lru():
    c = EmbeddingCache(3 * 4000)
    frames = [frame(i) for i in range(5)]
    for f in frames[:3]:
        c.put(c.get(f)[0], f, np.zeros(1000, np.float32))  # 4,000 bytes each
    assert c.get(frames[0])[1] is not None  # frames[0] is now the most recently used
    c.put(c.get(frames[3])[0], frames[3], np.zeros(1000, np.float32))
    assert c.stats.bytes <= c.max_bytes and c.stats.entries == 3
    assert c.get(frames[1])[1] is None  # the least recently used went
    assert c.get(frames[0])[1] is not None
    assert not EmbeddingCache(0).enabled
    with pytest.raises(ValueError):
        EmbeddingCache(10, near_threshold=-1)


def test_the_key_covers_every_row_column_and_channel():
    """A one-bit change anywhere in the frame is another key: not only at [0, 0, 0], but in every row (a key
    over every other row, or over the first rows only, would hand a changed picture the old embeddings)."""
    a = frame(3, (7, 5, 3))  # odd sizes: a stride of 2 misses the last row, column and the middle channel
    base = frame_key(a)
    for r in range(a.shape[0]):
        for col, ch in ((0, 0), (a.shape[1] - 1, 1), (a.shape[1] // 2, 2)):
            b = a.copy()
            b[r, col, ch] ^= 1
            assert frame_key(b) != base, f"a change at row {r}, column {col}, channel {ch} kept the key"
    c = EmbeddingCache(1 << 20)
    c.put(c.get(a)[0], a, np.ones(10, np.float32))
    b = a.copy()
    b[1, 2, 1] ^= 0x80  # an odd row, in the middle: the cache must not hand back a's embeddings
    assert c.get(b)[1] is None and c.stats.hits == 0
