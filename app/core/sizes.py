"""The one way Duet writes a byte count for people (CLI progress, Models page, first-run wizard, pull messages)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Decimal units, as disks and downloads are sold: ``512 B``, ``1.5 KB``, ``12.3 MB``, ``1.23 GB``.

    Gigabytes carry two decimals: a disk check ("1.95 GB needed, 2.01 GB free") must not round the
    difference away; a tiny model stays in MB rather than "0.0 GB".
    """
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"
