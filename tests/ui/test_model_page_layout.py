"""Issue 26 (round 2), item 5: the Models page after a delete, its layout, and a slow download's speed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QMessageBox, QWidget

from app.core.sessions import SessionStore
from app.core.settings import SettingsStore
from app.modelhub import catalog
from app.modelhub.jobs import JobStatus
from app.modelhub.library import ModelLibrary
from app.modelhub.pull import PullEvent, default_name
from app.ui.download_rows import human_rate
from app.ui.main_window import MainWindow
from app.ui.model_page import ModelPage
from app.ui.speech_bridge import SpeechBridge

REPO = catalog.CATALOG[0].repo


class FakePull:
    """A download the test steers: the page reads it (``running``, ``update``) as it reads a real pull's child."""

    def __init__(self, repo: str, quant: str) -> None:
        self.status = JobStatus(repo, quant, default_name(repo, quant))
        self.job = SimpleNamespace(quant=quant)

    def running(self) -> bool:
        return self.status.state == "running"

    def update(self) -> JobStatus:
        return self.status

    def pause(self) -> None:
        self.status.state = "paused"

    def cancel(self) -> None:
        self.status.state = "cancelled"


class FakeJobs:
    """The app's pull manager, without child processes or a network."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakePull] = {}

    def adopt_pending(self, library: ModelLibrary) -> list[FakePull]:
        return []

    def get(self, repo: str) -> FakePull | None:
        return self.jobs.get(repo)

    def start(self, repo: str, quant: str, name: str | None = None, library: ModelLibrary | None = None) -> FakePull:
        self.jobs[repo] = job = FakePull(repo, quant)
        return job


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A window as a user has it: no test model, no bundled demo, two imported models."""
    monkeypatch.delenv("DUET_DEV_MODELS", raising=False)
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "no-assets"))
    made: list[MainWindow] = []

    def make(library: ModelLibrary) -> MainWindow:
        store = SettingsStore(tmp_path / "config")
        w = MainWindow(store, session_store=SessionStore(tmp_path / "sessions"), library=library,
                       speech=SpeechBridge(store.load().speech, output_dir=tmp_path / "voice"), tray=False)
        qtbot.addWidget(w)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def _select(page: ModelPage, name: str) -> None:
    names = [page.table.item(r, 0).text() for r in range(page.table.rowCount())]
    page.table.selectRow(names.index(name))


def test_deleting_the_chosen_model_chooses_another_or_says_how_to_get_one(
        qtbot, window, tiny_model, tmp_path: Path, monkeypatch) -> None:
    lib = ModelLibrary(tmp_path / "models")
    for name in ("mine", "other"):
        lib.add(name, tiny_model.model, tiny_model.mmproj)  # copies: deleting them deletes the copies only
    w = window(lib)
    page = w.model_page
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    _select(page, "mine")
    page.default_button.click()
    assert w.watch.model_combo.currentData() == "mine"

    _select(page, "mine")
    page.delete_button.click()
    assert w.watch.model_combo.currentData() == "other", "the Watch tab moved to a model that is still there"
    assert w.watch.model_combo.findData("mine") < 0
    assert page.library_message.text() == "Deleted mine. The Watch tab now uses other."
    assert not page.table.selectionModel().selectedRows(), "no row is left selected for the next Delete"

    _select(page, "other")
    page.default_button.click()
    _select(page, "other")
    page.delete_button.click()
    assert w.watch.model_combo.currentData() is None and "No model yet" in w.watch.model_combo.currentText()
    assert "No model is left" in page.library_message.text()
    assert "No model yet" in w.watch.banner.text()
    w.start()  # says what to do instead of failing on a deleted file
    assert w.state == "idle" and "No model yet" in w.watch.banner.text() and "no such file" not in w.watch.banner.text()
    assert w.store.load().session.model in ("", "demo")


def _at(widget: QWidget, page: QWidget) -> QPoint:
    return widget.mapTo(page, QPoint(0, 0))


def test_the_table_shows_several_compact_rows_and_nothing_jumps_as_downloads_come_and_go(
        qtbot, tiny_model, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "no-assets"))
    lib = ModelLibrary(tmp_path / "models")
    for name in ("mmduet2-kitchen", "mine", "garage"):
        lib.add(name, tiny_model.model, tiny_model.mmproj, copy=False)
    jobs = FakeJobs()
    page = ModelPage(lib, jobs=jobs)  # type: ignore[arg-type]
    qtbot.addWidget(page)
    page.resize(1100, 640)
    page.show()
    qtbot.waitExposed(page)
    qtbot.wait(100)  # the page's first layout settles (the scroll area decides on its scroll bar)
    table = page.table
    row_h = table.rowHeight(0)
    assert row_h <= table.fontMetrics().height() + 12, "compact one-line rows"
    assert {table.rowHeight(r) for r in range(table.rowCount())} == {row_h}
    assert table.viewport().height() >= 5 * row_h, "several models in view, not one tall row"
    assert str(tiny_model.model) in table.item(1, 3).toolTip()  # the full paths, on demand

    row = page.pull_rows[REPO]
    fixed = [page.default_button, page.delete_button, row["start"], row["pause"]]
    before = [_at(b, page) for b in fixed]
    row["start"].click()
    job = jobs.get(REPO)
    job.status.last = PullEvent("download", "Downloading", done=3_000_000, total=9_000_000, rate=2e6, eta=3.0)
    qtbot.waitUntil(lambda: "MB/s" in row["status"].text(), timeout=5_000)
    assert row["bar"].isVisible()
    assert [_at(b, page) for b in fixed] == before, "a download row appearing moves no button"
    job.status.state, job.status.error = "failed", "the hub answered 429: too many requests. Wait a few minutes."
    qtbot.waitUntil(lambda: row["status"].text().startswith("✗"), timeout=5_000)
    row["cancel"].click()
    qtbot.waitUntil(lambda: "Cancelled" in row["status"].text(), timeout=5_000)
    assert not row["bar"].isVisible()
    assert [_at(b, page) for b in fixed] == before, "nor does one going away"


def test_a_slow_download_reads_in_kb_per_second_with_a_time_left_from_its_first_report(qtbot, tmp_path: Path,
                                                                                       monkeypatch) -> None:
    assert human_rate(40_000) == "40 KB/s" and human_rate(2_500_000) == "2.5 MB/s" and human_rate(600) == "600 B/s"
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "no-assets"))
    jobs = FakeJobs()
    page = ModelPage(ModelLibrary(tmp_path / "models"), jobs=jobs)  # type: ignore[arg-type]
    qtbot.addWidget(page)
    row = page.pull_rows[REPO]
    row["start"].click()
    job = jobs.get(REPO)
    job.status.last = PullEvent("check", "Disk: 4.0 MB needed, 80 GB free")
    qtbot.wait(1000)
    # The pull's first report has no rate of its own (one sample): the page's estimate stands in.
    job.status.last = PullEvent("download", "Downloading", done=40_000, total=4_000_000, rate=0.0, eta=None)
    qtbot.waitUntil(lambda: "KB/s" in row["status"].text(), timeout=5_000)
    text = row["status"].text()
    assert "left" in text and "MB/s" not in text and "measuring" not in text, text
    job.status.last = PullEvent("download", "Downloading", done=80_000, total=4_000_000, rate=40_000.0, eta=98.0)
    qtbot.waitUntil(lambda: "40 KB/s" in row["status"].text(), timeout=5_000)
    assert row["status"].text() == "Downloading 80.0 KB of 4.0 MB · 40 KB/s, about 01:38 left"
