"""Run under a real X server (xcb): does a screen grab from the session thread include the overlay?

Prints two numbers: how many pixels of the overlay's rectangle differ from the plain background
in a grab *without* exclusion, and *with* it. Used by test_capture_exclusion_real_pixels.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from PySide6.QtWidgets import QApplication

from app.capture.screen import ScreenSource
from app.ui.capture_exclusion import CaptureExclusion
from app.ui.overlay import Overlay


def _grab(region: tuple[int, int, int, int]) -> np.ndarray:
    src = ScreenSource(region=region)
    src.open()
    try:
        return src.grab()
    finally:
        src.close()


def _differs(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 30).sum())


def main() -> int:
    app = QApplication(sys.argv[:1])
    region = (100, 100, 400, 200)
    background = _grab(region)  # the private display's bare root window, before any window of ours
    ov = Overlay(fade_seconds=600, opacity=1.0)
    ov.setGeometry(*region)
    ov.add_reply("A reply the model must never read back from the screen.", "00:01")
    ov.show()
    end = time.monotonic() + 30.0  # until the overlay is painted (late on a loaded machine)
    while _differs(_grab(region), background) <= 5000 and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.05)
    results: dict[str, np.ndarray] = {}

    def grab(name: str, exclude: object) -> None:
        src = ScreenSource(region=region, exclude=exclude)
        src.open()
        results[name] = src.grab()
        src.close()

    for name, exclude in (("plain", None), ("excluded", CaptureExclusion([ov]))):
        t = threading.Thread(target=grab, args=(name, exclude))
        t.start()
        while t.is_alive():
            app.processEvents()
            time.sleep(0.005)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
    for name in ("plain", "excluded"):
        print(name, _differs(results[name], background))
    return 0


if __name__ == "__main__":
    sys.exit(main())
