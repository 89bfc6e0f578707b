"""Qwen2.5-VL's vision MLP zero-padded to a width ggml's fast CPU kernels take: for the converter's plan, and
for a ready-made projector (:func:`pad_vision_mlp`).

A ready GGUF pair (a repository of GGUFs, pulled without conversion) comes with a projector written by
another converter, whose vision MLP keeps Qwen2.5-VL's width (3,420 in the 3B). ggml's tiled matrix
multiply then skips every block's down-projection and the encoder runs about 1.4× slower on a CPU
(docs/benchmarks.md §1, :data:`VISION_FFN_MULTIPLE`). :func:`pad_vision_mlp` rewrites
such a file with the width padded with zeros — the outputs are the same — and :func:`padded_width` says
whether a file needs it. Written on the ``gguf`` package's reader and writer; every other key and tensor
is copied as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from app.modelhub.gguf_write import PendingTensor, write_gguf

# The vision MLP's hidden width is padded with zeros to a multiple of this. ggml's tiled CPU matrix
# multiply (llamafile's tinyBLAS) takes a product only when its inner dimension is a multiple of the SIMD
# width (16 floats for F16/F32 with AVX-512, 32 for BF16); the 3B's 3,420 is not, so its down-projection
# fell back to a row-by-row dot product and the vision encoder ran at half speed. Zero rows in gate/up
# (weights and bias) give silu(0)·0 = 0 and meet zero columns in down: the output is exactly the same.
# Measured in docs/benchmarks.md §1 ("the vision encoder's own speed").
VISION_FFN_MULTIPLE = 32


def padded(width: int) -> int:
    """``width`` rounded up to a multiple of :data:`VISION_FFN_MULTIPLE` (read when called: tests and the
    benchmark set it to 1 to write a projector the old way)."""
    return -(-width // VISION_FFN_MULTIPLE) * VISION_FFN_MULTIPLE


def mlp_axis(name: str) -> int | None:
    """The axis of a vision MLP tensor that runs along the MLP's hidden width, else None."""
    if ".mlp." not in name:
        return None
    if ".down_proj.weight" in name:
        return 1  # [hidden, ffn]
    if ".gate_proj." in name or ".up_proj." in name:
        return 0  # [ffn, hidden] and the [ffn] bias
    return None


def pad_transform(axis: int, size: int) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Zero-pad the sole source along ``axis`` to ``size`` (see :data:`VISION_FFN_MULTIPLE`)."""
    def f(xs: list[np.ndarray]) -> np.ndarray:
        widths = [(0, 0)] * xs[0].ndim
        widths[axis] = (0, size - xs[0].shape[axis])
        return np.pad(xs[0], widths)
    return f


_PROJECTOR = "qwen2.5vl_merger"
_FLOAT_TYPES = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
_FFN_KEY = "clip.vision.feed_forward_length"


def _ffn_tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader.tensors if t.name.startswith("v.blk.") and ".ffn_" in t.name}


def _width_and_padded(r: gguf.GGUFReader) -> tuple[int, int] | None:
    """(the vision MLP's width, the width to pad it to) for an opened file, or None when there is nothing to do:
    not a Qwen2.5-VL projector, already a multiple, or quantized MLP weights (their blocks cannot be padded)."""
    proj = r.fields.get("clip.projector_type")
    if proj is None or proj.contents() != _PROJECTOR:
        return None
    ffn = _ffn_tensors(r)
    down = ffn.get("v.blk.0.ffn_down.weight")
    if down is None:
        return None
    width = int(down.shape[0])  # GGUF order: ne0 (the inner dimension) first
    if padded(width) == width or any(t.tensor_type not in _FLOAT_TYPES for t in ffn.values()):
        return None
    return width, padded(width)


def padded_width(path: Path | str) -> int | None:
    """The width :func:`pad_vision_mlp` would pad ``path``'s vision MLP to, or None when there is nothing to do."""
    plan = _width_and_padded(gguf.GGUFReader(str(path)))
    return plan[1] if plan else None


def _padded(t: gguf.ReaderTensor, width: int, new: int) -> np.ndarray:
    """``t``'s data with its MLP-width axis padded to ``new`` (numpy order: rows last-but-one)."""
    data = np.asarray(t.data)
    per = data.shape[-1] // int(t.shape[0])  # array elements per value: 2 for BF16 read as bytes, else 1
    pad = [(0, 0)] * data.ndim
    if ".ffn_down.weight" in t.name:
        pad[-1] = (0, (new - width) * per)  # [hidden, width]: the inner dimension
    elif t.name.endswith(".weight"):
        pad[0] = (0, new - width)  # gate/up [width, hidden]: more rows
    else:
        if data.ndim != 1 or data.shape[0] != width:
            return data  # a bias of the hidden size (ffn_down.bias)
        pad[0] = (0, new - width)
    return np.pad(data, pad)


def pad_vision_mlp(src: Path | str, dst: Path | str) -> bool:
    """Write ``src`` to ``dst`` with the vision MLP padded; False (and nothing written) when nothing is to do.
    ``dst`` appears whole or not at all."""
    r = gguf.GGUFReader(str(src))
    plan = _width_and_padded(r)
    if plan is None:
        return False
    width, new = plan

    def kv(w: gguf.GGUFWriter) -> None:
        for key, f in r.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if key == _FFN_KEY:
                w.add_uint32(key, new)
            elif f.types[0] == gguf.GGUFValueType.ARRAY:
                w.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[-1])
            else:
                w.add_key_value(key, f.contents(), f.types[0])

    tensors = (PendingTensor.of(t.name, np.ascontiguousarray(_padded(t, width, new) if ".ffn_" in t.name and
                                                            t.name.startswith("v.blk.") else t.data), t.tensor_type)
               for t in r.tensors)
    dst = Path(dst)
    os.replace(write_gguf(dst, r.fields["general.architecture"].contents(), kv, tensors), dst)
    return True
