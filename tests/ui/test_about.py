"""The app shows its version, where to get a newer one, and uses the shipped icon; About checks the computer."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QToolButton

import app
from app.core.version import releases_url
from app.ui.about import AboutDialog, about_text
from app.ui.tray import app_icon


def test_about_names_the_version_the_releases_page_and_the_bundled_model(qtbot, make_window) -> None:
    text = about_text()
    assert f"Duet {app.__version__}" in text and releases_url() in text
    assert "offline demo model is built in" in text
    w = make_window()
    buttons = {b.text() for b in w.tabs.cornerWidget().findChildren(QToolButton)}
    assert buttons == {"About", "Training runtime"}


def test_the_window_icon_is_the_shipped_icon_set(qtbot) -> None:
    icon = app_icon()
    sizes = {(s.width(), s.height()) for s in icon.availableSizes()}
    assert {(16, 16), (256, 256)} <= sizes
    busy = app_icon(recording=True)
    assert not busy.isNull() and busy.pixmap(64, 64).toImage().pixelColor(51, 51).red() > 200


def test_about_checks_this_computer_off_the_gui_thread(qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))  # the child resolves `demo` as a fresh install
    dlg = AboutDialog()
    qtbot.addWidget(dlg)
    dlg.show()
    panel = dlg.doctor
    assert panel.button.text() == "Check this computer" and not panel.results.isVisible()
    with qtbot.waitSignal(panel.finished, timeout=180_000):
        qtbot.mouseClick(panel.button, Qt.MouseButton.LeftButton)
        assert not panel.button.isEnabled() and "Checking" in panel.summary.text()  # the window stays live
    text = panel.results.toPlainText()
    assert text.startswith("✓ CPU: ") and "Demo model: one step of" in text and "Screen capture: " in text
    assert panel.results.isVisible() and panel.button.isEnabled() and panel.button.text() == "Check again"
    assert panel.summary.text() == "No problems found." or "problem(s) found" in panel.summary.text()
