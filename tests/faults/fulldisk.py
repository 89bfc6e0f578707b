"""Helpers shared by the full-disk cases (imported inside their private mount namespaces too)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fill_up(filler: Path) -> None:
    """Leave the filesystem holding ``filler`` with no free byte: append zeros until ENOSPC, in ever smaller writes."""
    with open(filler, "ab", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its SHA-256: what a case compares before and after a failed write."""
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}
