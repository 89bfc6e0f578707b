"""Issue 26, item 14: closing the app mid-download asks, says the download pauses, and it does resume.

The real window's Models page pulls from the loopback stand-in hub (real huggingface_hub, real HTTP, the
pull in its own process); the question box is answered as a user would, by clicking its buttons.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.modelhub.jobs import PullManager
from app.modelhub.library import ModelLibrary
from app.ui.model_page import ModelPage
from tests.modelhub.hub_server import StandInHub, partial_bytes, repo_from_folder

REPO_ID = "wangyueqian/MMDuet2"


@pytest.fixture
def hub(tiny_model, monkeypatch, tmp_path):
    from huggingface_hub import constants

    with StandInHub({REPO_ID: repo_from_folder(tiny_model.hf_dir)}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("DUET_HUB_TIMEOUT", "5")
        yield h


def _answer(button_text: str, seen: list[str]) -> None:
    """Click ``button_text`` in the question box once it is up (exec() blocks the test meanwhile)."""
    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, click)
            return
        seen.append(f"{box.text()}\n{box.informativeText()}")
        next(b for b in box.buttons() if b.text().replace("&", "") == button_text).click()
    QTimer.singleShot(50, click)


def test_closing_mid_download_asks_pauses_and_the_download_resumes(qtbot, make_window, hub,
                                                                   tmp_path: Path) -> None:
    w = make_window()
    w.show()
    page = w.model_page
    row = page.pull_rows[REPO_ID]
    row["quant"].setCurrentIndex(row["quant"].findData("Q8_0"))
    hub.faults.rate = 250_000  # slow enough to close mid-file
    row["start"].click()
    job = page.jobs.get(REPO_ID)
    try:
        qtbot.waitUntil(lambda: partial_bytes(w.library.root) >= 1 << 20, timeout=60_000)
        seen: list[str] = []
        _answer("Cancel", seen)
        assert not w.close(), "Cancel keeps the window open"
        assert w.isVisible() and job.running(), "and the download going"
        assert "downloading wangyueqian/MMDuet2" in seen[0]
        assert "pauses the download" in seen[0] and "Resume continues where it stopped" in seen[0]

        _answer("Pause and close", seen)
        assert w.close()
        assert not job.running() and job.status.state == "paused"
    finally:
        if job.running():
            job.pause()

    # The next start: the Models page shows it paused, and Resume continues (a Range request), to the end.
    hub.faults.rate = 0
    jobs = PullManager()
    again = ModelPage(ModelLibrary(w.library.root), jobs=jobs)
    qtbot.addWidget(again)
    row2 = again.pull_rows[REPO_ID]
    assert row2["start"].text() == "Resume" and "Paused" in row2["status"].text()
    row2["start"].click()
    qtbot.waitUntil(lambda: jobs.get(REPO_ID).status.state in ("done", "failed"), timeout=120_000)
    assert jobs.get(REPO_ID).status.state == "done", jobs.get(REPO_ID).status.error
    resumed = [r for r in hub.faults.requests if "model.safetensors" in r and r.startswith("GET")]
    assert len(resumed) == 2 and "Range: bytes=" in resumed[1]  # continued, not restarted


def test_closing_with_no_download_asks_nothing(qtbot, make_window) -> None:
    w = make_window()
    w.show()
    assert w.close() and not w.isVisible()
