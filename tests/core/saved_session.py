"""A short saved session for the tests that read one back (the CLI, the Sessions page, fault cases).

Written through the real ``SessionStore`` so the files are the ones the app writes; one helper instead of a
copy of the same loop in each test file that needs a session on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.sessions import SessionStore, session_meta
from app.core.types import Frame, StepResult

# Four 2-second turns of an 8 s clip, replies at 4 s and 8 s.
REPLIES = ("NO REPLY", "A red circle appeared.", "NO REPLY", "A red circle appeared.")


def write_session(replies: tuple[str, ...] | list[str] = REPLIES, *, video: str = "", durable: bool = False,
                  frames_per_turn: int = 2, turn_s: float = 2.0) -> Path:
    """Save a finished session (in ``DUET_DATA_DIR``) whose turn ``i`` ends at ``turn_s·(i+1)`` and said
    ``replies[i]``; returns its folder. ``video`` is the clip path the session records (none by default)."""
    meta = session_meta("clip.avi", "demo", interval=1.0, frames_per_turn=2, tokens_per_frame=16,
                        talkativeness=0.0, video=video or None)
    w = SessionStore().create(meta, durable=durable)
    img = np.full((16, 16, 3), 90, np.uint8)
    for i, text in enumerate(replies):
        t = turn_s * (i + 1)
        frames = tuple(Frame(img, time=t - (frames_per_turn - 1 - k)) for k in range(frames_per_turn))
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == "NO REPLY", frames=frames))
    w.close("ended")
    return w.directory
