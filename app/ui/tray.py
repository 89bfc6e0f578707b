"""Tray icon with the few actions a user wants without the window: show, pause, mute, overlay, quit.

On desktops without a tray (stock GNOME without the AppIndicator extension) nothing is created and
the main window stays the way in; ``make_tray`` returns None there.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget


def app_icon(recording: bool = False) -> QIcon:
    """Drawn, not shipped: two overlapping speech dots; red while capture is on."""
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
    for label, slot in (("Show Duet", "show_and_raise"), ("Pause / resume", "toggle_pause"),
                        ("Mute / unmute", "toggle_mute"), ("Show / hide overlay", "toggle_overlay"),
                        ("Quit", "close")):
        act = QAction(label, menu)
        act.triggered.connect(getattr(window, slot))
        menu.addAction(act)
    tray.setContextMenu(menu)
    tray.activated.connect(lambda reason: window.show_and_raise()  # type: ignore[attr-defined]
                           if reason == QSystemTrayIcon.ActivationReason.Trigger else None)
    tray.show()
    return tray
