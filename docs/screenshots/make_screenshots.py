"""Take the README screenshots under a real X server (Xvfb + xcompmgr for translucency).

    Xvfb :99 -screen 0 1600x1000x24 &  xcompmgr -d :99 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python docs/screenshots/make_screenshots.py

Everything on screen is the real app: the real main window, session thread, screen capture (mss)
with the overlay hidden from each grab, the overlay itself, the speaker (muted here). One thing is
staged: the model's words. The tiny test model has random weights and writes gibberish, and the
real MMDuet2 weights are not available on this machine, so a scripted backend plays the part of
the model with lines written for Debian's vtest.avi street scene. It goes through the same
Backend interface and session as a real model.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402
from PySide6.QtWidgets import QApplication, QLabel  # noqa: E402

from app.core.types import StepTimings  # noqa: E402
from app.engine.backend import BackendStep  # noqa: E402

SCRIPT = {
    2: "Two people are walking toward the camera along the path on the left.",
    5: "A man in a dark coat crosses the road from the right.",
    8: "Three pedestrians have stopped near the lamp post, as if waiting for someone.",
    11: "The group by the lamp post starts walking together toward the building.",
    14: "A woman with a red bag enters from the bottom of the frame.",
}
ANSWER = "Mostly walking across the square; nobody is running, and the road itself is empty of cars."


class ScriptedBackend:
    """Plays the model's part for the screenshots (see the module docstring)."""

    name = "scripted"
    device = "CPU"

    def __init__(self) -> None:
        self.turn = 0

    def reset(self, system_prompt: str) -> None:
        self.turn = 0

    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = 128) -> BackendStep:
        self.turn += 1
        time.sleep(0.12)  # roughly the tiny model's step time on this machine
        reply = ANSWER if text else SCRIPT.get(self.turn)
        timings = StepTimings(vision_ms=41.0, image_prefill_ms=20.0, prefill_ms=34.0, decode_ms=48.0 if reply else 0.0,
                              total_ms=143.0 if reply else 95.0)
        return BackendStep(text=reply or "NO REPLY", silent=reply is None, timings=timings,
                           kv_cells=240 * self.turn, n_ctx=8192)

    def close(self) -> None:
        pass


class Player(QLabel):
    """A plain video player window (the 'any player on screen' use): vtest.avi at its own frame rate."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.setWindowTitle("vtest.avi — Video Player")
        self.cap = cv2.VideoCapture(str(path))
        self.setFixedSize(1152, 864)
        self.setScaledContents(True)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.next_frame)
        self.timer.start(100)
        self.next_frame()

    def next_frame(self) -> None:
        from app.ui.images import rgb_to_pixmap

        ok, bgr = self.cap.read()
        if ok:
            self.setPixmap(rgb_to_pixmap(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))


def pump(app: QApplication, seconds: float, until=None) -> None:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until and until()):
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="duet-shots-"))
    os.environ["DUET_DATA_DIR"] = str(tmp / "data")
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Duet")
    from app.core.sessions import SessionStore
    from app.core.settings import SettingsStore
    from app.modelhub.library import ModelLibrary
    from app.ui.main_window import MainWindow

    store = SettingsStore(tmp / "config")
    s = store.load()
    s.speech.muted = True
    s.overlay.font_size = 16
    s.overlay.fade_seconds = 120
    store.save(s)

    # 1. The overlay over a video playing in another window, Duet watching that screen region.
    player = Player(VIDEO)
    player.move(0, 0)
    player.show()
    w = MainWindow(store, session_store=SessionStore(tmp / "sessions"), library=ModelLibrary(tmp / "models"),
                   backend_factory=lambda req: ScriptedBackend(), tray=False)
    w.set_source("region:0,0,1152,864")
    w.set_model("tiny")  # a model reference for the session; the scripted backend plays the model
    w.interval_spin.setValue(1.0)
    w.frames_spin.setValue(2)
    w.resize(1280, 800)
    w.move(1600, 0)  # off to the side while the overlay shot is taken
    w.show()
    w.overlay.resize(560, 330)
    w.overlay.move(560, 500)
    w.overlay.show()
    w.start()
    pump(app, 40, until=lambda: len(w.chat.replies()) >= 3)
    w.ask("What are people doing?")
    pump(app, 8, until=lambda: len(w.chat.replies()) >= 4)
    pump(app, 1.5)
    screen = QGuiApplication.primaryScreen()
    shot = screen.grabWindow(0, 0, 0, 1152, 864)
    shot.save(str(OUT / "overlay_over_video.png"))
    print("overlay grabs hidden from capture:", w.exclusion.hidden_count)

    # 2. The main window, mid-session.
    pump(app, 12, until=lambda: len(w.chat.replies()) >= 5)
    pump(app, 1.0)  # grabbed where it is, off the watched region (else it would watch itself)
    w.grab().save(str(OUT / "main_window.png"))

    # 3. Settings.
    dlg = w.open_settings()
    dlg.move(300, 200)
    pump(app, 0.8)
    dlg.grab().save(str(OUT / "settings.png"))
    dlg.reject()

    # 4. The session browser.
    w.stop()
    pump(app, 10, until=lambda: w.state == "idle")
    w.tabs.setCurrentIndex(1)
    w.sessions_page.list.setCurrentRow(0)
    replies = w.sessions_page.chat.replies()
    if len(replies) > 1:
        replies[1].buttons["late"].setChecked(True)
    pump(app, 0.8)
    w.grab().save(str(OUT / "sessions.png"))  # models.png: make_model_screenshots.py (a download in progress)
    w.close()
    player.close()
    print("saved to", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
