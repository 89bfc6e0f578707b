"""Tray icon with the few actions a user wants without the window: show, pause, mute, overlay, quit.

On desktops without a tray (stock GNOME without the AppIndicator extension) nothing is created and
the main window stays the way in; ``make_tray`` returns None there.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget


def app_icon(recording: bool = False) -> QIcon:
    """Duet's icon from assets/icons (every size); a red dot on it while capture is on."""
    from app.core.assets import ICON_SIZES, assets_dir

    files = [assets_dir() / "icons" / f"duet-{n}.png" for n in ICON_SIZES]
    files = [f for f in files if f.is_file()]
    if files:
        if not recording:
            icon = QIcon()
            for f in files:
                icon.addFile(str(f))
            return icon
        pix = QPixmap(str(files[-1])).scaled(64, 64, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation)
        p = QPainter(pix)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(230, 60, 70))
        p.drawEllipse(40, 40, 22, 22)
        p.end()
        return QIcon(pix)
    return _drawn_icon(recording)


def _drawn_icon(recording: bool) -> QIcon:
    """Without assets (a stripped checkout): two overlapping speech dots; red while capture is on."""
    pix = QPixmap(64, 64)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setBrush(QColor(61, 109, 242))
    p.setPen(Qt.PenStyle.NoPen)
    p.drawEllipse(4, 10, 40, 40)
    p.setBrush(QColor(230, 80, 95) if recording else QColor(140, 170, 255))
    p.drawEllipse(24, 18, 36, 36)
    p.end()
    return QIcon(pix)


def make_tray(window: QWidget) -> QSystemTrayIcon | None:
    if not QSystemTrayIcon.isSystemTrayAvailable():
        return None
    tray = QSystemTrayIcon(app_icon(), window)
    tray.setToolTip("Duet")
    menu = QMenu(window)
    sync = window.settings_sync  # type: ignore[attr-defined]  # settings actions (app/ui/window_settings.py)
    for label, slot in (("Show Duet", window.show_and_raise), ("Pause / resume", window.toggle_pause),  # type: ignore[attr-defined]
                        ("Mute / unmute", sync.toggle_mute), ("Show / hide overlay", sync.toggle_overlay),
                        ("Quit", window.quit_app)):  # type: ignore[attr-defined]
        act = QAction(label, menu)
        act.triggered.connect(slot)
        menu.addAction(act)
    tray.setContextMenu(menu)
    tray.activated.connect(lambda reason: window.show_and_raise()  # type: ignore[attr-defined]
                           if reason == QSystemTrayIcon.ActivationReason.Trigger else None)
    tray.show()
    return tray
