"""About Duet: the version, where a newer one is published, and what is bundled.

Duet does not look for updates over the network by itself (nothing leaves the machine unless the
user asks); the About box says which version this is and links to the releases page instead.
"""

from __future__ import annotations

import html

from PySide6.QtWidgets import QMessageBox, QToolButton, QWidget

from app import __version__
from app.core.assets import bundled_demo, is_frozen
from app.core.version import releases_url


def about_text() -> str:
    url = html.escape(releases_url())
    demo = bundled_demo()
    bundled = ("the offline demo model is built in" if demo is not None else "no model is built in")
    return (f"<h3>Duet {html.escape(__version__)}</h3>"
            "<p>An assistant that watches with you and speaks up when something is worth saying "
            "(MMDuet2 on llama.cpp).</p>"
            f"<p>{'Installed app' if is_frozen() else 'Running from source'}; {bundled}.</p>"
            f'<p>Newer versions: <a style="color:#7fb0ff" href="{url}">{url}</a></p>')


def show_about(parent: QWidget | None) -> None:
    box = QMessageBox(parent)
    box.setWindowTitle("About Duet")
    box.setTextFormat(box.textFormat().RichText)
    box.setText(about_text())
    box.setIconPixmap(parent.windowIcon().pixmap(64, 64) if parent is not None else box.iconPixmap())
    box.exec()


def about_button(parent: QWidget) -> QToolButton:
    """A small "About" button for a corner of the main window's tabs."""
    b = QToolButton(parent)
    b.setText("About")
    b.setObjectName("aboutButton")
    b.setToolTip(f"Duet {__version__}: version and where to get a newer one")
    b.setAutoRaise(True)
    b.clicked.connect(lambda: show_about(parent))
    return b
