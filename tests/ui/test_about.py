"""The app shows its version, where to get a newer one, and uses the shipped icon."""

from __future__ import annotations

from PySide6.QtWidgets import QToolButton

import app
from app.core.version import releases_url
from app.ui.about import about_text
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
