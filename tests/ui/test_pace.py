"""The Pace controls say how often the model decides."""

from __future__ import annotations

from app.ui.pace import pace_text


def test_pace_text() -> None:
    assert pace_text(1.0, 2) == "The model decides every 2 s on 2 frames (one frame each 1 s)."
    assert pace_text(0.75, 1) == "The model decides every 0.75 s on 1 frame."
    assert pace_text(0.5, 4) == "The model decides every 2 s on 4 frames (one frame each 0.5 s)."


def test_the_window_updates_the_hint(qtbot, make_window) -> None:
    w = make_window()
    w.interval_spin.setValue(1.5)
    w.frames_spin.setValue(2)
    assert w.pace_label.text() == "The model decides every 3 s on 2 frames (one frame each 1.5 s)."
