"""``write_gguf`` holds one tensor at a time: a converter's peak memory is its largest tensor, not its model."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import gguf
import numpy as np
import pytest

from app.modelhub.gguf_write import PendingTensor, write_gguf

F32, F16, Q8 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0


def test_each_tensor_is_made_when_written_and_dropped_before_the_next(tmp_path: Path) -> None:
    alive: list[weakref.ref] = []
    made: list[str] = []

    def maker(name: str, shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType, seed: int):
        def make() -> np.ndarray:
            gc.collect()
            assert all(r() is None for r in alive), "an earlier tensor is still held"
            made.append(name)
            a = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            out = a.astype(np.float16) if qtype == F16 else a if qtype == F32 else gguf.quants.quantize(a, qtype)
            alive.append(weakref.ref(out))
            return out
        return make

    specs = [("a.weight", (64, 32), F32), ("b.weight", (16, 64), F16), ("c.weight", (8, 64), Q8)]
    pending = [PendingTensor.planned(n, s, q, maker(n, s, q, i)) for i, (n, s, q) in enumerate(specs)]
    tmp = write_gguf(tmp_path / "m.gguf", "llama", lambda w: w.add_name("m"), pending)
    assert made == ["a.weight", "b.weight", "c.weight"]
    r = gguf.GGUFReader(str(tmp))
    got = {t.name: t for t in r.tensors}
    for i, (name, shape, qtype) in enumerate(specs):
        a = np.random.default_rng(i).standard_normal(shape, dtype=np.float32)
        t = got[name]
        assert t.tensor_type == qtype and tuple(reversed([int(x) for x in t.shape])) == shape
        back = gguf.quants.dequantize(t.data, qtype).reshape(shape)
        assert np.allclose(back, a, atol=0.05 if qtype == Q8 else 1e-3)


def test_a_tensor_unlike_its_plan_fails_and_leaves_nothing(tmp_path: Path) -> None:
    pending = [PendingTensor.planned("a.weight", (4, 4), F32, lambda: np.zeros((4, 5), np.float32))]
    with pytest.raises(ValueError, match="a.weight: made float32 \\(4, 5\\), planned float32 \\(4, 4\\)"):
        write_gguf(tmp_path / "m.gguf", "llama", lambda w: None, pending)
    assert list(tmp_path.iterdir()) == []
