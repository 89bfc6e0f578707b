"""About Duet: the version, where a newer one is published, and what is bundled.

Duet does not look for updates over the network by itself (nothing leaves the machine unless the
user asks); the About box says which version this is and links to the releases page instead. It also
runs ``duet doctor``'s checks on request ("Check this computer"), for a user about to report a problem.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import __version__
from app.core.assets import bundled_demo, is_frozen
from app.core.version import releases_url
from app.ui.doctor_panel import DoctorPanel


def about_text() -> str:
    url = html.escape(releases_url())
    demo = bundled_demo()
    bundled = ("the offline demo model is built in" if demo is not None else "no model is built in")
    return (f"<h3>Duet {html.escape(__version__)}</h3>"
            "<p>An assistant that watches with you and speaks up when something is worth saying "
            "(MMDuet2 on llama.cpp).</p>"
            f"<p>{'Installed app' if is_frozen() else 'Running from source'}; {bundled}.</p>"
            f'<p>Newer versions: <a style="color:#7fb0ff" href="{url}">{url}</a></p>')


class AboutDialog(QDialog):
    """The version text beside the app's icon, then the computer check (a dialog of its own rather than a
    QMessageBox, which closes on any button and so cannot hold a button that shows results)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Duet")
        self.setMinimumWidth(620)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        icon = QLabel()
        if parent is not None and not parent.windowIcon().isNull():
            icon.setPixmap(parent.windowIcon().pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.text = QLabel(about_text())
        self.text.setObjectName("aboutText")
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setOpenExternalLinks(True)
        self.text.setWordWrap(True)
        top.addWidget(icon)
        top.addWidget(self.text, 1)
        lay.addLayout(top)
        self.doctor = DoctorPanel(self)
        lay.addWidget(self.doctor)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)


def show_about(parent: QWidget | None) -> None:
    dialog = AboutDialog(parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # one per click; a running check outlives it safely
    dialog.exec()


def about_button(parent: QWidget) -> QToolButton:
    """A small "About" button for a corner of the main window's tabs."""
    b = QToolButton(parent)
    b.setText("About")
    b.setObjectName("aboutButton")
    b.setToolTip(f"Duet {__version__}: version and where to get a newer one")
    b.setAutoRaise(True)
    b.clicked.connect(lambda: show_about(parent))
    return b
