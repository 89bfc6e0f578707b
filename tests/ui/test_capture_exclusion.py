"""CaptureExclusion: a grab on another thread sees Duet's windows hidden, and they come back after it.

(The same with real X11 pixels: test_capture_exclusion_x11.py.)
"""

from __future__ import annotations

import threading
import time

from PySide6.QtWidgets import QApplication

from app.ui.capture_exclusion import CaptureExclusion
from app.ui.overlay import Overlay


def test_capture_exclusion_hides_the_overlay_around_a_grab_from_another_thread(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    ov.show()
    ex = CaptureExclusion([ov])
    seen: list[bool] = []

    def grabber() -> None:  # what ScreenSource does on the session thread around each grab
        ex.hide()
        seen.append(ov.isVisible())
        ex.restore()

    t = threading.Thread(target=grabber)
    t.start()
    while t.is_alive():
        QApplication.processEvents()
        time.sleep(0.005)
    assert seen == [False]
    qtbot.waitUntil(ov.isVisible, timeout=2000)
    assert ex.hidden_count == 1
