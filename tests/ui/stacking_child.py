"""Run under a real X server (xcb): start Duet as `duet gui` does, then report what X sees.

Prints ``order <i_main> <i_overlay>`` (positions in X's stacking order, bottom first) and
``offered <titles>`` (the windows the source picker offers). Used by test_own_windows_x11.py.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.capture.x11windows import list_windows
from app.ui.main import main as gui_main


def report() -> None:
    app = QApplication.instance()
    # Until X lists all three windows (a loaded machine maps them late); then what X sees is final.
    end = time.monotonic() + 30.0
    while True:
        app.processEvents()
        titles = [w.title for w in list_windows()]
        if {"Duet", "Duet overlay", "Some editor"} <= set(titles) or time.monotonic() > end:
            break
        time.sleep(0.05)
    print("order", titles.index("Duet"), titles.index("Duet overlay"), flush=True)
    from app.ui.source_picker import SourcePicker

    picker = SourcePicker("screen")
    offered = [picker.windows.item(i).text() for i in range(picker.windows.count())]
    print("offered", "|".join(offered), flush=True)
    picker.deleteLater()
    for top in QApplication.topLevelWidgets():
        if top.windowTitle() == "Duet":
            top.close()  # saves settings, stops the session thread
    app.quit()  # the stand-in window would keep the app running


def main() -> int:
    # Another program's window, standing in for one the user may want to watch.
    stranger = subprocess.Popen([sys.executable, "-c", STRANGER], stdout=subprocess.PIPE, text=True)
    try:
        stranger.stdout.readline()  # "shown": its window is mapped (or it died: the report says it is missing)
        QApplication(sys.argv[:1])
        QTimer.singleShot(1500, report)
        with tempfile.TemporaryDirectory() as tmp:
            return gui_main(["--no-tray", "--no-first-run", "--config-dir", str(Path(tmp) / "cfg")])
    finally:
        stranger.kill()
        stranger.wait(10)


STRANGER = """
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
w = QLabel("another program")
w.setWindowTitle("Some editor")
w.resize(300, 200)
w.show()
app.processEvents()
print("shown", flush=True)
app.exec()
"""


if __name__ == "__main__":
    sys.exit(main())
