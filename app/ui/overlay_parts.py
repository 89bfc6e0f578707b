"""What the reply overlay (:mod:`app.ui.overlay`) is made of: its cards, how their text breaks, the Watching pill.

Kept apart from the overlay window, which places, paints and animates these: a :class:`Card` is a reply with
the repeats folded into it (plain data the tests and the painter read), :func:`wrap_lines` breaks its text
as Qt will draw it, and :class:`WatchingPill` is the small window that says capture is on while the overlay
is hidden.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QGuiApplication,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QTextLayout,
    QTextOption,
)
from PySide6.QtWidgets import QWidget

FOLD_ROWS = 6  # earlier replies listed under an opened fold; older ones are counted in a last line


@dataclass
class Card:
    text: str  # the latest of the replies folded here
    stamp: str  # its video time as mm:ss (the latest, not the first)
    shown_at: float  # monotonic seconds; refreshed when a repeat folds into it
    count: int = 1
    earlier: list[tuple[str, str]] = field(default_factory=list)  # (stamp, text) folded in, oldest first
    open: bool = False  # the user opened the fold: the earlier replies are listed under the text

    def fold_lines(self) -> list[str]:
        """What an opened fold lists: the earlier replies, newest last, with their times."""
        shown = self.earlier[-FOLD_ROWS:]
        lines = [f"{stamp} · {text}" if stamp else text for stamp, text in shown]
        hidden = len(self.earlier) - len(shown)
        return ([f"+{hidden} earlier"] if hidden else []) + lines


class WatchingPill(QWidget):
    """A small always-on-top "● Watching" badge, shown while capture is on and the overlay is hidden.

    Why a window of its own: the red pill painted in the overlay disappears with it, yet the user
    must always be able to see that the screen or camera is being looked at.
    """

    def __init__(self) -> None:
        super().__init__(None)
        flags = (Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint | Qt.WindowType.Tool
                 | Qt.WindowType.WindowTransparentForInput)
        if sys.platform == "darwin":
            flags = (flags & ~Qt.WindowType.Tool) | Qt.WindowType.Window
        self.setWindowFlags(flags)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.setWindowTitle("Duet watching")
        self.label = ""
        self.resize(180, 30)

    def set_label(self, label: str) -> None:
        self.label = label
        font = QFont(self.font())
        font.setPointSize(10)
        text = self.text()
        w = QFontMetrics(font).horizontalAdvance(text) + 28
        self.resize(min(w, 480), QFontMetrics(font).height() + 14)
        screen = QGuiApplication.primaryScreen()
        if screen is not None:  # top right corner of the primary screen
            g = screen.availableGeometry()
            self.move(g.right() - self.width() - 16, g.top() + 16)
        self.update()

    def text(self) -> str:
        return "● Duet is watching" + (f" · {self.label}" if self.label else "")

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        path = QPainterPath()
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        path.addRoundedRect(r, r.height() / 2, r.height() / 2)
        p.fillPath(path, QColor(190, 30, 45, 230))
        font = QFont(self.font())
        font.setPointSize(10)
        p.setFont(font)
        p.setPen(QColor(255, 255, 255))
        p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), self.text())
        p.end()


def wrap_lines(text: str, font: QFont, width: int) -> list[str]:
    """Lines as Qt would break them; a long unbroken "word" breaks anywhere instead of overflowing."""
    layout = QTextLayout(text, font)
    option = QTextOption()
    option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
    layout.setTextOption(option)
    lines: list[str] = []
    layout.beginLayout()
    while True:
        line = layout.createLine()
        if not line.isValid():
            break
        line.setLineWidth(max(10, width))
        lines.append(text[line.textStart():line.textStart() + line.textLength()].rstrip())
    layout.endLayout()
    return lines or [""]
