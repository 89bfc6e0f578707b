"""Drawing a screen region to watch: a dimmed layer over every screen, drag a rectangle, Esc to cancel."""

from __future__ import annotations

from PySide6.QtCore import QEventLoop, QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget


class RegionSelector(QWidget):
    """A full-desktop dimmed layer: drag a rectangle, release to choose it, Esc to cancel.

    ``chosen`` carries the rectangle in the screen grabber's pixels: Qt works in device-independent
    pixels, so on a scaled (HiDPI) screen the rectangle is multiplied by that screen's ratio to
    match what mss captures. A click without a drag (under 8 px either way) counts as a cancel.
    """

    chosen = Signal(int, int, int, int)
    cancelled = Signal()

    def __init__(self) -> None:
        super().__init__(None, Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint
                         | Qt.WindowType.Tool)
        self.setWindowTitle("Duet — draw a region")
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        geo = QRect()
        for screen in QGuiApplication.screens():
            geo = geo.united(screen.geometry())
        self.setGeometry(geo)
        self._a: QPoint | None = None
        self._b: QPoint | None = None
        self.result_rect: tuple[int, int, int, int] | None = None

    def select(self) -> tuple[int, int, int, int] | None:
        """Show the layer and wait (a local event loop) until a rectangle is drawn or Esc is pressed."""
        loop = QEventLoop()
        self.chosen.connect(loop.quit)
        self.cancelled.connect(loop.quit)
        self.show()
        self.raise_()
        self.activateWindow()
        self.setFocus()
        self.grabKeyboard()  # Esc must reach us even where the window manager gives no focus
        if self.isVisible():
            loop.exec()
        return self.result_rect

    def selection(self) -> QRect | None:
        """The rectangle being dragged, in this widget's coordinates."""
        if self._a is None or self._b is None:
            return None
        a, b = self._a, self._b
        return QRect(min(a.x(), b.x()), min(a.y(), b.y()), abs(a.x() - b.x()), abs(a.y() - b.y()))

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0, 110))
        r = self.selection()
        if r is not None:
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
            p.fillRect(r, Qt.GlobalColor.transparent)
            p.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceOver)
            p.setPen(QPen(QColor(91, 140, 255), 2))
            p.drawRect(r)
            p.setPen(QColor(255, 255, 255))
            p.drawText(r.bottomLeft() + QPoint(4, 18), f"{r.width()} × {r.height()}")
        hint = "Drag to select the region Duet watches  ·  Esc to cancel"
        font = p.font()
        font.setPointSize(14)
        p.setFont(font)
        box = QRect(0, 24, self.width(), 40)
        screen = QGuiApplication.primaryScreen()
        if screen is not None:  # centred on the primary screen, not across the whole desktop
            g = screen.geometry().translated(-self.geometry().topLeft())
            box = QRect(g.x(), g.y() + 24, g.width(), 40)
        p.fillRect(box.adjusted(box.width() // 2 - 300, 0, -(box.width() // 2 - 300), 0), QColor(20, 22, 30, 220))
        p.setPen(QColor(255, 255, 255))
        p.drawText(box, int(Qt.AlignmentFlag.AlignCenter), hint)
        p.end()

    def mousePressEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if e.button() != Qt.MouseButton.LeftButton:
            return
        self._a = self._b = e.position().toPoint()
        self.update()

    def mouseMoveEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._a is not None:
            self._b = e.position().toPoint()
            self.update()

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:  # noqa: N802
        if self._a is None or e.button() != Qt.MouseButton.LeftButton:
            return
        self._b = e.position().toPoint()
        r = self.selection()
        self._a = self._b = None
        if r is None or r.width() <= 8 or r.height() <= 8:
            self.update()  # too small to be meant: keep the layer up, let the user drag again
            return
        g = r.translated(self.geometry().topLeft())
        screen = QGuiApplication.screenAt(g.center()) or QGuiApplication.primaryScreen()
        ratio = screen.devicePixelRatio() if screen is not None else 1.0
        self.result_rect = (round(g.x() * ratio), round(g.y() * ratio),
                            round(g.width() * ratio), round(g.height() * ratio))
        self._finish()
        self.chosen.emit(*self.result_rect)

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        if e.key() == Qt.Key.Key_Escape:
            self.result_rect = None
            self._finish()
            self.cancelled.emit()
        else:
            super().keyPressEvent(e)

    def _finish(self) -> None:
        self.releaseKeyboard()
        self.close()
