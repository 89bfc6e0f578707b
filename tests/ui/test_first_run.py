"""The first-run wizard: shown once on a fresh config, saves its choices, starts the MMDuet2 pull."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QWizard

from app.core.settings import SettingsStore
from app.modelhub.hardware import GIB, Hardware
from app.modelhub.jobs import PullManager
from app.modelhub.library import ModelLibrary
from app.ui.first_run import FirstRunWizard, permission_notes, should_show


def test_wizard_once_with_choices_saved_and_pull_started(qtbot, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the pull it starts must not reach a network here
    store = SettingsStore(tmp_path / "config")
    assert should_show(store)
    jobs = PullManager()
    hw = Hardware(8, 32 * GIB, 24 * GIB)
    wiz = FirstRunWizard(store, ModelLibrary(tmp_path / "models"), jobs=jobs, hw=hw)
    qtbot.addWidget(wiz)
    wiz.show()
    titles = []
    for _ in range(len(wiz.pageIds())):  # bounded: a page that refuses "Next" fails below instead of hanging
        titles.append(wiz.currentPage().title())
        if wiz.currentId() == wiz.pageIds()[-1]:
            break
        wiz.next()
    assert titles == ["What Duet does", "Models on this computer", "Get MMDuet2", "Permissions and voice"]
    assert wiz.doctor.button.isVisible() and wiz.doctor.button.text() == "Check this computer"  # duet doctor's
    wiz.voice.setChecked(False)
    wiz.get_mmduet2.setChecked(True)
    wiz.button(QWizard.WizardButton.FinishButton).click()
    s = store.load()
    assert s.setup.first_run_done and s.speech.muted
    assert not should_show(store)
    job = jobs.get("wangyueqian/MMDuet2")
    assert job is not None and job.job.quant == "Q4_K_M"  # the CPU recommendation for this machine
    qtbot.waitUntil(lambda: job.update().state == "failed", timeout=60_000)  # the Models page reads it so
    assert "offline mode" in job.status.error  # HF_HUB_OFFLINE honoured, with the reason shown
    job.cancel()


def test_cancelling_also_counts_as_shown(qtbot, tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "config")
    wiz = FirstRunWizard(store, ModelLibrary(tmp_path / "models"), jobs=PullManager(),
                         hw=Hardware(2, 8 * GIB, 6 * GIB))
    qtbot.addWidget(wiz)
    wiz.reject()
    assert not should_show(store) and not store.load().speech.muted


def test_permission_notes_name_the_platform_settings() -> None:
    assert "Screen Recording" in permission_notes("darwin")
    assert "Camera" in permission_notes("win32")
    assert "video" in permission_notes("linux")
