"""A new user is never offered the random test model; with no model the window says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.sessions import SessionStore
from app.core.settings import SettingsStore
from app.modelhub.library import ModelLibrary
from app.ui.main_window import MainWindow
from app.ui.model_choice import offered, pick_default
from app.ui.speech_bridge import SpeechBridge


@pytest.fixture
def fresh_window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A window on fresh user folders, as a new user starts it (no DUET_DEV_MODELS)."""
    monkeypatch.delenv("DUET_DEV_MODELS", raising=False)
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "no-assets"))  # a build without a bundled model

    windows: list[MainWindow] = []

    def make(library: ModelLibrary | None = None) -> MainWindow:
        store = SettingsStore(tmp_path / "config")
        w = MainWindow(store, session_store=SessionStore(tmp_path / "sessions"),
                       library=library or ModelLibrary(tmp_path / "models"),
                       speech=SpeechBridge(store.load().speech, output_dir=tmp_path / "voice"), tray=False)
        qtbot.addWidget(w)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()  # stops the session thread before Qt destroys it


def test_first_start_offers_no_test_model_and_explains_instead_of_starting(qtbot, fresh_window,
                                                                           tmp_path: Path) -> None:
    w = fresh_window()
    names = [w.watch.model_combo.itemData(i) for i in range(w.watch.model_combo.count())]
    labels = [w.watch.model_combo.itemText(i) for i in range(w.watch.model_combo.count())]
    assert "tiny" not in names and not any("test model" in t for t in labels)
    assert w.watch.model_combo.currentData() is None and "No model yet" in w.watch.model_combo.currentText()
    assert not w.watch.banner.isHidden() and "No model yet" in w.watch.banner.text() and "Models" in w.watch.banner.text()
    w.start()
    assert w.state == "idle", "nothing starts without a usable model"
    assert not (tmp_path / "sessions").exists() or not list((tmp_path / "sessions").iterdir())


def test_the_demo_model_is_the_default_when_installed(qtbot, fresh_window, tiny_model, tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "models")
    lib.add("demo", tiny_model.model, tiny_model.mmproj, source="demo", copy=False)
    w = fresh_window(lib)
    assert w.watch.model_combo.currentData() == "demo"
    assert w.watch.banner.isHidden()


def test_developers_can_still_choose_the_tiny_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "models")
    monkeypatch.delenv("DUET_DEV_MODELS", raising=False)
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "no-assets"))
    assert [c.name for c in offered(lib)] == []
    assert [c.name for c in offered(lib, explicit="tiny")] == ["tiny"]  # duet gui --model tiny
    assert pick_default("tiny", offered(lib)) == "", "an old settings file naming tiny is not honoured"
    monkeypatch.setenv("DUET_DEV_MODELS", "1")
    assert [c.name for c in offered(lib)] == ["tiny"]
