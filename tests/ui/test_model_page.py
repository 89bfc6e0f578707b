"""The Models page's download flow against the loopback stand-in hub (real huggingface_hub, real HTTP).

The catalog's MMDuet2 row pulls ``wangyueqian/MMDuet2``; the stand-in serves the tiny Qwen2.5-VL
checkpoint under that name, so the whole pull (child process, verify, convert, quantize, import) is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

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
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # for pulls run in this process
        monkeypatch.setenv("DUET_HUB_TIMEOUT", "5")
        monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
        yield h


def test_download_pause_close_reopen_resume_delete(qtbot, hub, tmp_path: Path, monkeypatch) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    jobs = PullManager()
    page = ModelPage(library, jobs=jobs)  # not given to qtbot: this test deletes it
    row = page.pull_rows[REPO_ID]
    quant = row["quant"]
    assert quant.currentData() == page.rec.quant and "recommended" in quant.currentText()
    assert any("fits" in quant.itemText(i) for i in range(quant.count()))
    quant.setCurrentIndex(quant.findData("Q8_0"))

    hub.faults.rate = 250_000  # slow enough to pause mid-file
    row["start"].click()
    qtbot.waitUntil(lambda: "Downloading" in row["status"].text() and row["bar"].value() > 0, timeout=60_000)
    assert "KB/s" in row["status"].text() and row["pause"].isEnabled()  # 250 KB/s reads in KB/s, not "0.3 MB/s"
    assert "left" in row["status"].text(), "a time left from the first report on"
    # Pause once part of the big file is on disk (huggingface_hub writes 1 MB pieces).
    qtbot.waitUntil(lambda: partial_bytes(library.root) >= 1 << 20, timeout=60_000)
    row["pause"].click()
    assert jobs.get(REPO_ID).status.state == "paused"
    assert "Paused" in row["status"].text() and row["start"].text() == "Resume"
    assert library.user_entries() == []

    # The page goes away (tab closed / window rebuilt); the job is the app's, not the page's.
    page.close()
    page.deleteLater()
    qtbot.wait(50)
    hub.faults.rate = 0
    page2 = ModelPage(library, jobs=jobs)
    qtbot.addWidget(page2)
    row2 = page2.pull_rows[REPO_ID]
    assert row2["start"].text() == "Resume" and "Paused" in row2["status"].text()
    changed = []
    page2.changed.connect(lambda: changed.append(1))
    row2["start"].click()
    qtbot.waitUntil(lambda: jobs.get(REPO_ID).status.state in ("done", "failed"), timeout=120_000)
    assert jobs.get(REPO_ID).status.state == "done", jobs.get(REPO_ID).status.error
    qtbot.waitUntil(lambda: bool(changed), timeout=5_000)
    assert "installed" in row2["status"].text()
    assert row2["start"].text() == "Installed" and not row2["start"].isEnabled()
    names = [page2.table.item(r, 0).text() for r in range(page2.table.rowCount())]
    assert "mmduet2-q8_0" in names
    resumed = [r for r in hub.faults.requests if "model.safetensors" in r and r.startswith("GET")]
    assert len(resumed) == 2 and "Range: bytes=" in resumed[1]  # continued, not restarted

    # Default and delete.
    page2.table.selectRow(names.index("mmduet2-q8_0"))
    chosen = []
    page2.default_chosen.connect(chosen.append)
    page2.default_button.click()
    assert chosen == ["mmduet2-q8_0"]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    page2.delete_button.click()
    assert library.get("mmduet2-q8_0") is None and not (library.root / "mmduet2-q8_0").exists()


def test_failed_pull_says_why_and_cancel_cleans_up(qtbot, hub, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    jobs = PullManager()
    page = ModelPage(library, jobs=jobs)
    qtbot.addWidget(page)
    row = page.pull_rows[REPO_ID]
    hub.faults.status = 429
    row["start"].click()
    qtbot.waitUntil(lambda: jobs.get(REPO_ID).status.state == "failed", timeout=60_000)
    # Wait for the failure itself: "429" alone can match the stand-in hub's port in the "Looking up …" line.
    qtbot.waitUntil(lambda: row["status"].text().startswith("✗"), timeout=5_000)
    assert "429" in row["status"].text() and "Wait a few minutes" in row["status"].text()
    assert row["start"].text() == "Resume" and row["cancel"].isEnabled()
    row["cancel"].click()
    assert "Cancelled" in row["status"].text()
    assert not (library.root / ".pulls").exists() or not any((library.root / ".pulls").iterdir())
    assert library.user_entries() == []


def test_a_pull_left_unfinished_by_an_earlier_run_is_offered_for_resuming(qtbot, hub, tmp_path: Path) -> None:
    import threading

    from app.modelhub.pull import PullJob, PullStopped

    library = ModelLibrary(tmp_path / "data" / "models")
    stop = threading.Event()
    job = PullJob(REPO_ID, quant="Q5_K_M", library=library, stop=stop,
                  progress=lambda ev: stop.set() if ev.stage == "verify" else None)
    with pytest.raises(PullStopped):
        job.run()  # an earlier session that quit mid-download
    page = ModelPage(library, jobs=PullManager())
    qtbot.addWidget(page)
    row = page.pull_rows[REPO_ID]
    assert row["start"].text() == "Resume" and "Paused" in row["status"].text()
    assert row["quant"].currentData() == "Q5_K_M"
    row["start"].click()
    qtbot.waitUntil(lambda: library.get("mmduet2-q5_k_m") is not None, timeout=120_000)
