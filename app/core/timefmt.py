"""The one way Duet writes a video time for people: ``MM:SS``, or ``H:MM:SS`` from an hour on."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """``65.4`` → ``"01:05"``; ``3725`` → ``"1:02:05"`` (rounded to the nearest second)."""
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
