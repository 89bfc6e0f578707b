"""The dark theme holds everywhere a person looks: readable lists, visible tick boxes, a dark first-run wizard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QRect
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QFileDialog, QVBoxLayout, QWidget

from app.ui.style import STYLE


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(float) / 255
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return 0.2126 * c[..., 0] + 0.7152 * c[..., 1] + 0.0722 * c[..., 2]


def contrast(view: QAbstractItemView, rect: QRect) -> float:
    """WCAG contrast between the background (most common colour) and the text's core in ``rect``."""
    img = view.viewport().grab(rect).toImage().convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, :img.width() * 3]
    px = arr.reshape(-1, 3)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    bg = colours[counts.argmax()]
    lum = _luminance(px)
    lb = float(_luminance(bg[None])[0])
    far = lum[np.argmax(np.abs(lum - lb))]
    hi, lo = max(far, lb), min(far, lb)
    return (hi + 0.05) / (lo + 0.05)


def test_model_dropdown_items_are_readable(qtbot) -> None:
    host = QWidget()
    host.setStyleSheet(STYLE)
    combo = QComboBox(host)
    for name in ("demo — offline demo model", "mmduet2-q4", "my-model"):
        combo.addItem(name)
    QVBoxLayout(host).addWidget(combo)
    qtbot.addWidget(host)
    host.show()
    combo.showPopup()
    view = combo.view()
    qtbot.waitUntil(view.isVisible)
    rect = view.visualRect(view.model().index(2, 0))  # an item that is not highlighted
    assert contrast(view, rect) >= 4.5
    combo.hidePopup()


def test_file_dialog_list_is_readable(qtbot, tmp_path: Path) -> None:
    for name in ("street.mp4", "kitchen.mkv", "notes.avi"):
        (tmp_path / name).write_bytes(b"0")
    host = QWidget()
    host.setStyleSheet(STYLE)
    qtbot.addWidget(host)
    dlg = QFileDialog(host, "Choose a video", str(tmp_path))
    dlg.setOption(QFileDialog.Option.DontUseNativeDialog)
    dlg.setViewMode(QFileDialog.ViewMode.Detail)
    dlg.show()
    view = dlg.findChild(QAbstractItemView, "treeView")
    qtbot.waitUntil(lambda: view.model().rowCount(view.rootIndex()) >= 3, timeout=5000)
    view.clearSelection()
    view.setCurrentIndex(view.model().index(-1, -1))
    rect = view.visualRect(view.model().index(1, 0, view.rootIndex()))
    assert contrast(view, rect) >= 4.5
    dlg.close()


def _pixels(widget: QWidget) -> np.ndarray:
    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
    # A copy: the array must not outlive the image whose memory it views (freed when this returns; reading it
    # afterwards crashed the test run once the heap was laid out differently).
    return arr[:, :img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def test_a_ticked_box_looks_unlike_an_empty_one(qtbot) -> None:
    from PySide6.QtWidgets import QCheckBox, QStyle, QStyleOptionButton

    host = QWidget()
    host.setStyleSheet(STYLE)
    boxes = [QCheckBox("Speak replies aloud", host), QCheckBox("Speak replies aloud", host)]
    boxes[0].setChecked(True)
    layout = QVBoxLayout(host)
    for b in boxes:
        layout.addWidget(b)
    qtbot.addWidget(host)
    host.show()
    opt = QStyleOptionButton()
    boxes[0].initStyleOption(opt)
    r = boxes[0].style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, opt, boxes[0])
    inner = r.adjusted(3, 3, -3, -3)  # inside the border
    on, off = (_luminance(_pixels(b)[inner.top():inner.bottom(), inner.left():inner.right()]).mean() for b in boxes)
    hi, lo = max(on, off), min(on, off)
    assert (hi + 0.05) / (lo + 0.05) >= 3.0, "ticked and empty boxes must differ at a glance"


def test_the_first_run_wizard_wears_the_dark_theme(qtbot, tmp_path: Path) -> None:
    from app.core.settings import SettingsStore
    from app.modelhub.hardware import Hardware
    from app.modelhub.library import ModelLibrary
    from app.ui.first_run import FirstRunWizard

    wizard = FirstRunWizard(SettingsStore(tmp_path / "settings.toml"), library=ModelLibrary(tmp_path / "models"),
                            hw=Hardware(2, 8 << 30, 6 << 30))
    qtbot.addWidget(wizard)
    wizard.show()
    px = _pixels(wizard)
    colours, counts = np.unique(px.reshape(-1, 3), axis=0, return_counts=True)
    assert _luminance(colours[counts.argmax()][None])[0] < 0.05  # mostly the window's dark background, not white


def test_a_spin_box_shows_its_arrows(qtbot) -> None:
    """The themed frame dropped Qt's own buttons to slivers with no arrows: each button now shows one,
    light on the dark button, and every image the sheet names exists."""
    import re

    from PySide6.QtWidgets import QDoubleSpinBox

    for url in re.findall(r"url\(([^)]+)\)", STYLE):
        assert Path(url).is_file(), url
    host = QWidget()
    host.setStyleSheet(STYLE)
    spin = QDoubleSpinBox(host)
    spin.setRange(0.1, 60.0)
    spin.setValue(1.0)
    spin.resize(200, 40)
    host.resize(220, 60)
    host.show()
    qtbot.waitExposed(host)
    img = spin.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, :img.width() * 3]
    arr = arr.reshape(img.height(), img.width(), 3)
    buttons = _luminance(arr[:, -20:])  # the 20 px button column
    top, bottom = buttons[: img.height() // 2], buttons[img.height() // 2:]
    for half in (top, bottom):  # an arrow: a few pixels much lighter than the button around it
        assert (half > 0.3).sum() >= 6, half.max()


def test_progress_and_scroll_bars_are_dark(qtbot) -> None:
    """Qt's own progress and scroll bars are a white track: on the dark pages they glared (the Models page)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QProgressBar, QScrollBar

    host = QWidget()
    host.setStyleSheet(STYLE)
    bar = QProgressBar(host)
    bar.setValue(10)
    bar.setGeometry(0, 0, 300, 20)
    scroll = QScrollBar(Qt.Orientation.Vertical, host)
    scroll.setRange(0, 1000)
    scroll.setGeometry(310, 0, 10, 200)
    host.resize(330, 210)
    host.show()
    qtbot.waitExposed(host)
    for widget, region in ((bar, (slice(5, 15), slice(150, 290))), (scroll, (slice(100, 190), slice(0, 10)))):
        img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, :img.width() * 3]
        track = arr.reshape(img.height(), img.width(), 3)[region]
        assert _luminance(track).mean() < 0.1, (type(widget).__name__, _luminance(track).mean())
