"""Writing one GGUF file safely: to a temporary sibling, fsynced, a full disk reported as one.

Shared by the converter and :mod:`app.modelhub.vision_pad`; the caller renames the result into place
(``os.replace``, or :func:`app.core.atomic.install_pair` for a model + projector pair).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import gguf
import numpy as np


def write_gguf(path: Path, arch: str, kv: Callable[[gguf.GGUFWriter], None],
               tensors: Iterable[tuple[str, np.ndarray, gguf.GGMLQuantizationType]]) -> Path:
    """Write one GGUF to a temporary sibling of ``path`` and fsync it; the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        kv(w)
        for name, data, qtype in tensors:
            w.add_tensor(name, data, raw_dtype=None if qtype in (gguf.GGMLQuantizationType.F32,
                                                                   gguf.GGMLQuantizationType.F16) else qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
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
