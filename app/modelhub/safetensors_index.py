"""Reading a Hugging Face safetensors checkpoint without torch, bf16 included.

``safetensors``' numpy loader cannot represent bfloat16 (numpy has no such dtype) and MMDuet2 ships
bf16 weights, so we read the documented file layout ourselves (8-byte little-endian header length,
a JSON header, raw little-endian data) through a memory map and widen bf16 to float32 by a shift.
Truncated files are caught up front by checking every tensor's byte range against the file size.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.errors import InputError


class CheckpointError(InputError):
    """A checkpoint file is missing, truncated or malformed; the message names it."""


_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16,
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in file
    end: int


class SafetensorsCheckpoint:
    """All tensors of a (possibly sharded) checkpoint directory, loaded lazily."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                if not isinstance(weight_map, dict):
                    raise TypeError("weight_map is not an object")
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e})") from e
            files = sorted({self._shard(index, f) for f in weight_map.values()})
        else:
            files = sorted(self.directory.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.directory}: no *.safetensors weights found")
        self.tensors: dict[str, TensorInfo] = {}
        self._maps: dict[Path, mmap.mmap] = {}
        for f in files:
            for info in self._read_header(f):
                self.tensors[info.name] = info

    def _shard(self, index: Path, name: object) -> Path:
        """A shard named by the index: a plain file name inside the checkpoint folder, nothing else."""
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{index}: shard name {name!r} is not a file inside {self.directory}; "
                                  "the index is damaged or hostile")
        return self.directory / name

    @staticmethod
    def _read_header(path: Path) -> list[TensorInfo]:
        if not path.exists():
            raise CheckpointError(f"{path}: weight shard listed in the index is missing")
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(f"{path}: truncated or not a safetensors file (header claims {n} bytes)")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
        base = 8 + n
        out = []
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(meta, dict) or "dtype" not in meta:
                raise CheckpointError(f"{path}: tensor {name} has no dtype in the header; the file is damaged")
            if meta["dtype"] not in _DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']!r}")
            offsets, shape = meta.get("data_offsets"), meta.get("shape")
            if (not isinstance(offsets, list) or len(offsets) != 2
                    or not all(isinstance(v, int) and v >= 0 for v in offsets) or offsets[0] > offsets[1]):
                raise CheckpointError(f"{path}: tensor {name} has invalid data_offsets {offsets!r}")
            if not isinstance(shape, list) or not all(isinstance(v, int) and v >= 0 for v in shape):
                raise CheckpointError(f"{path}: tensor {name} has invalid shape {shape!r}")
            s, e = offsets
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[meta["dtype"]]).itemsize
            if e - s != nbytes:
                raise CheckpointError(f"{path}: tensor {name} spans {e - s} bytes but shape {shape} "
                                      f"{meta['dtype']} needs {nbytes}")
            if base + e > size:
                raise CheckpointError(
                    f"{path}: truncated: tensor {name} ends at byte {base + e} but the file has {size} bytes")
            out.append(TensorInfo(name, meta["dtype"], tuple(meta["shape"]), path, base + s, base + e))
        return out

    def load(self, name: str) -> np.ndarray:
        """The tensor as float32 (or its integer dtype), copied out of the memory map."""
        info = self.tensors[name]
        mm = self._maps.get(info.file)
        if mm is None:
            with open(info.file, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[info.file] = mm
        arr = np.frombuffer(mm, dtype=_DTYPES[info.dtype], count=int(np.prod(info.shape, dtype=np.int64)),
                            offset=info.start).reshape(info.shape)
        if info.dtype == "BF16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if arr.dtype.kind == "f":
            return arr.astype(np.float32)
        return arr.copy()

    def close(self) -> None:
        for mm in self._maps.values():
            mm.close()
        self._maps.clear()
