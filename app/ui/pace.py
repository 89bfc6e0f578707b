"""How often the model decides, said in words under the Pace controls.

"Every" is the time between two sampled frames and "Frames per turn" how many frames the model
looks at before each decision (speak or stay silent), so one decision comes every
``interval × frames`` seconds of video — the same arithmetic the session uses to advance its clock
(app/engine/session.py, which also counts the ticks a live source dropped while the model was busy).
"""

from __future__ import annotations


def _seconds(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{text} s"


def pace_text(interval: float, frames_per_turn: int) -> str:
    """E.g. ``the model decides every 2 s on 2 frames (one frame each 1 s)``."""
    frames = max(1, int(frames_per_turn))
    every = _seconds(interval * frames)
    if frames == 1:
        return f"The model decides every {every} on 1 frame."
    return f"The model decides every {every} on {frames} frames (one frame each {_seconds(interval)})."
