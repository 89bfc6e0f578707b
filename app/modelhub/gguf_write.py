"""Writing one GGUF file safely: to a temporary sibling, fsynced, a full disk reported as one, each tensor made
only when it is written.

Shared by the converter and :mod:`app.modelhub.vision_pad`; the caller renames the result into place
(``os.replace``, or :func:`app.core.atomic.install_pair` for a model + projector pair).

gguf's ``GGUFWriter.add_tensor`` keeps every tensor until the file is written: the whole model in memory at once
(the 3B converted to f32 is 11.7 GB on top of what is being read; a fine-tune's export peaked at 17.7 GiB). Here
the header is written from each tensor's planned shape and type (:class:`PendingTensor`), then each tensor is
made, written and dropped in turn, with gguf's own ``add_tensor_info`` / ``write_tensor_data``. (A tensor given
already made, :meth:`PendingTensor.of`, is held by its caller: vision_pad's are the source file's memory map,
and only the few padded ones are arrays.)
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

_FLOATS = {gguf.GGMLQuantizationType.F32: np.dtype(np.float32), gguf.GGMLQuantizationType.F16: np.dtype(np.float16)}


@dataclass(frozen=True)
class PendingTensor:
    """A tensor of the file: what its header entry says now, its data made by ``make()`` when its turn comes.

    ``shape`` and ``dtype`` are those of the array ``make()`` returns (for a quantized type, gguf's bytes:
    ``uint8``, the last dimension in bytes).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    qtype: gguf.GGMLQuantizationType
    make: Callable[[], np.ndarray]

    @classmethod
    def planned(cls, name: str, shape: Iterable[int], qtype: gguf.GGMLQuantizationType,
                make: Callable[[], np.ndarray]) -> PendingTensor:
        """A tensor of ``shape`` (numpy order, elements) to be stored as ``qtype``, not made yet."""
        shape = tuple(int(n) for n in shape)
        if qtype in _FLOATS:
            return cls(name, shape, _FLOATS[qtype], qtype, make)
        return cls(name, tuple(gguf.quants.quant_shape_to_byte_shape(shape, qtype)), np.dtype(np.uint8), qtype, make)

    @classmethod
    def of(cls, name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> PendingTensor:
        """A tensor already in memory (or memory-mapped), as gguf holds it."""
        return cls(name, tuple(data.shape), data.dtype, qtype, lambda: data)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def write_gguf(path: Path, arch: str, kv: Callable[[gguf.GGUFWriter], None],
               tensors: Iterable[PendingTensor]) -> Path:
    """Write one GGUF to a temporary sibling of ``path`` and fsync it; the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        kv(w)
        pending = list(tensors)
        for t in pending:
            w.add_tensor_info(t.name, t.shape, t.dtype, t.nbytes, raw_dtype=None if t.qtype in _FLOATS else t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in pending:
            data = np.ascontiguousarray(t.make())
            if data.dtype != t.dtype or tuple(data.shape) != t.shape:  # the header already says otherwise
                raise ValueError(f"{t.name}: made {data.dtype} {tuple(data.shape)}, planned {t.dtype} {t.shape}")
            w.write_tensor_data(data)
            del data
        w.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        return tmp
    except OSError as e:
        # numpy's tofile reports a short write as "N requested and M written", without an errno:
        # on a filesystem with no room left that is the full disk, and the user should read so.
        full = e.errno is None and "requested and" in str(e) and shutil.disk_usage(tmp.parent).free < (1 << 20)
        tmp.unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
