"""Screenshots of the Models page mid-download and of the first-run wizard, under a real X server.

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python docs/screenshots/make_model_screenshots.py

Everything is real: the main window, the pull (a child process running huggingface_hub against the
loopback stand-in hub from tests/modelhub/hub_server.py, which serves the tiny Qwen2.5-VL checkpoint
as ``wangyueqian/MMDuet2``, slowed down so the download is caught mid-way), and this machine's
hardware as llama.cpp reports it. Nothing reaches the internet.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="duet-model-shots-"))
    os.environ["DUET_DATA_DIR"] = str(tmp / "data")
    os.environ.pop("HF_HUB_OFFLINE", None)
    from app.modelhub.tiny import build_tiny
    from tests.modelhub.hub_server import StandInHub, repo_from_folder

    tiny = build_tiny()
    with StandInHub({"wangyueqian/MMDuet2": repo_from_folder(tiny.hf_dir)}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        hub.faults.rate = 60_000
        from PySide6.QtWidgets import QApplication

        from app.core.settings import SettingsStore
        from app.modelhub.jobs import manager
        from app.modelhub.library import ModelLibrary
        from app.ui.first_run import FirstRunWizard
        from app.ui.main_window import MainWindow

        app = QApplication.instance() or QApplication(sys.argv[:1])
        store = SettingsStore(tmp / "config")
        library = ModelLibrary(tmp / "data" / "models")
        library.add("my-mmduet2-q5", tiny.model, tiny.mmproj, source="imported")

        wiz = FirstRunWizard(store, library)
        wiz.show()
        wiz.next()
        wiz.next()
        wiz.get_mmduet2.setChecked(True)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.05)
        wiz.grab().save(str(OUT / "first_run.png"))
        wiz.hide()

        w = MainWindow(store, library=library, tray=False)
        w.resize(1280, 860)
        w.show()
        w.tabs.setCurrentWidget(w.model_page)
        manager().start("wangyueqian/MMDuet2", "Q4_K_M", library=library)
        deadline = time.monotonic() + 60
        row = w.model_page.pull_rows["wangyueqian/MMDuet2"]
        while time.monotonic() < deadline and row["bar"].value() < 400:  # type: ignore[attr-defined]
            app.processEvents()
            time.sleep(0.05)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        w.grab().save(str(OUT / "models.png"))
        manager().get("wangyueqian/MMDuet2").cancel()
        w.overlay.close()
        w.close()
    print(f"wrote {OUT / 'first_run.png'} and {OUT / 'models.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
