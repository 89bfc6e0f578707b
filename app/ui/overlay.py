"""The always-on-top reply overlay: frameless, translucent, draggable, resizable, optionally click-through.

Replies fade out after ``fade_seconds``. A reply that nearly repeats one still on screen is folded
into it (the old card is refreshed and shows "×2") instead of being shown and spoken again; the
transcript keeps both. While capture is on, a red "watching" pill is painted in the corner, so the
user always knows the screen or camera is being looked at.

Keeping the overlay out of the model's own screen frames: on Windows the window asks the compositor
to leave it out of captures (``SetWindowDisplayAffinity``); elsewhere :class:`CaptureExclusion`
hides it for the length of each grab. The grab runs on the session thread, so hiding is posted to
the GUI thread and the grabber waits (with a timeout, never a deadlock) until it is done.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, QPoint, QRect, QRectF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QFont, QFontMetrics, QMouseEvent, QPainter, QPainterPath, QPaintEvent
from PySide6.QtWidgets import QApplication, QSizeGrip, QWidget

from app.ui.dedup import find_repeat

WDA_EXCLUDEFROMCAPTURE = 0x11


@dataclass
class Card:
    text: str
    stamp: str  # video time as mm:ss
    shown_at: float  # monotonic seconds; refreshed when a repeat folds into it
    count: int = 1


class Overlay(QWidget):
    """See the module docstring. ``add_reply`` returns False when the reply was folded (don't speak it)."""

    folded = Signal(str)  # the folded text

    def __init__(self, *, fade_seconds: float = 20.0, font_size: int = 15, opacity: float = 0.85,
                 max_cards: int = 4) -> None:
        super().__init__(None)
        flags = Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint | Qt.WindowType.Tool
        if sys.platform == "darwin":  # Qt.Tool becomes an NSPanel that vanishes when the app loses focus
            flags = (flags & ~Qt.WindowType.Tool) | Qt.WindowType.Window
        self.setWindowFlags(flags)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.setWindowTitle("Duet overlay")
        self.setMinimumSize(240, 90)
        self.resize(460, 220)
        self.fade_seconds = fade_seconds
        self.font_size = font_size
        self.panel_opacity = opacity
        self.max_cards = max_cards
        self.cards: list[Card] = []
        self.capturing = False
        self.capture_label = ""
        self.click_through = False
        self._drag_from: QPoint | None = None
        self._grip = QSizeGrip(self)
        self._grip.resize(16, 16)
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    # ---- content ------------------------------------------------------------------------------
    def add_reply(self, text: str, stamp: str = "") -> bool:
        text = text.strip()
        if not text:
            return False
        now = time.monotonic()
        self._expire(now)
        i = find_repeat(text, [c.text for c in self.cards])
        if i is not None:
            card = self.cards[i]
            card.count += 1
            card.shown_at = now
            self.folded.emit(text)
            self.update()
            return False
        self.cards.append(Card(text, stamp, now))
        del self.cards[:-self.max_cards]
        self.update()
        return True

    def clear(self) -> None:
        self.cards.clear()
        self.update()

    def set_capturing(self, on: bool, label: str = "") -> None:
        self.capturing = on
        self.capture_label = label
        self.update()

    def visible_texts(self) -> list[str]:
        self._expire(time.monotonic())
        return [c.text for c in self.cards]

    def _alpha(self, card: Card, now: float) -> float:
        """Fully opaque for the first two thirds of its life, then a linear fade."""
        age = now - card.shown_at
        start = self.fade_seconds * 2 / 3
        if age <= start:
            return 1.0
        return max(0.0, 1.0 - (age - start) / max(1e-3, self.fade_seconds - start))

    def _expire(self, now: float) -> None:
        self.cards = [c for c in self.cards if self._alpha(c, now) > 0.0]

    @Slot()
    def _tick(self) -> None:
        if self.cards:
            self._expire(time.monotonic())
            self.update()

    # ---- window behaviour ----------------------------------------------------------------------
    def set_click_through(self, on: bool) -> None:
        """Flip input transparency on the native window: setWindowFlags would hide and re-show it."""
        self.click_through = on
        handle = self.windowHandle()
        if handle is not None:
            handle.setFlag(Qt.WindowType.WindowTransparentForInput, on)
        else:
            self.setWindowFlag(Qt.WindowType.WindowTransparentForInput, on)
        self._grip.setVisible(not on)

    def showEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)  # type: ignore[arg-type]
        if self.click_through:
            self.set_click_through(True)
        exclude_from_capture(self)

    def resizeEvent(self, event: object) -> None:  # noqa: N802
        self._grip.move(self.width() - self._grip.width() - 2, self.height() - self._grip.height() - 2)
        super().resizeEvent(event)  # type: ignore[arg-type]

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            handle = self.windowHandle()
            # Let the window manager move us where it can (Wayland forbids client-side positioning).
            if handle is not None and handle.startSystemMove():
                self._drag_from = None
            else:
                self._drag_from = event.globalPosition().toPoint() - self.frameGeometry().topLeft()
            event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_from is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self.move(event.globalPosition().toPoint() - self._drag_from)
            event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._drag_from = None

    # ---- painting ------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        now = time.monotonic()
        self._expire(now)
        margin, pad, gap = 8, 12, 8
        y = self.height() - margin
        font = QFont(self.font())
        font.setPointSize(self.font_size)
        small = QFont(font)
        small.setPointSize(max(8, self.font_size - 5))
        fm, sfm = QFontMetrics(font), QFontMetrics(small)
        width = self.width() - 2 * margin
        for card in reversed(self.cards):  # newest at the bottom, older ones stacked above
            text_rect = fm.boundingRect(QRect(0, 0, width - 2 * pad, 10_000),
                                        int(Qt.TextFlag.TextWordWrap), card.text)
            head = sfm.height() + 2
            h = text_rect.height() + head + 2 * pad - 4
            top = y - h
            if top < margin + (26 if self.capturing else 0):
                break
            alpha = self._alpha(card, now)
            path = QPainterPath()
            path.addRoundedRect(QRectF(margin, top, width, h), 12, 12)
            p.fillPath(path, QColor(18, 20, 28, int(235 * self.panel_opacity * alpha)))
            p.setFont(small)
            p.setPen(QColor(150, 190, 255, int(255 * alpha)))
            label = f"Duet · {card.stamp}" if card.stamp else "Duet"
            if card.count > 1:
                label += f"   ×{card.count}"
            p.drawText(QRect(margin + pad, int(top) + pad - 4, width - 2 * pad, head), 0, label)
            p.setFont(font)
            p.setPen(QColor(245, 245, 245, int(255 * alpha)))
            p.drawText(QRect(margin + pad, int(top) + pad - 4 + head, width - 2 * pad, text_rect.height()),
                       int(Qt.TextFlag.TextWordWrap), card.text)
            y = top - gap
        if self.capturing:
            self._paint_watching(p, small, sfm)
        elif not self.cards and not self.click_through:
            path = QPainterPath()
            path.addRoundedRect(QRectF(margin, margin, width, self.height() - 2 * margin), 12, 12)
            p.fillPath(path, QColor(18, 20, 28, 90))
            p.setPen(QColor(230, 230, 230, 200))
            p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), "Duet overlay — drag to move")
        p.end()

    def _paint_watching(self, p: QPainter, font: QFont, fm: QFontMetrics) -> None:
        text = "● Watching" + (f" {self.capture_label}" if self.capture_label else "")
        w = fm.horizontalAdvance(text) + 20
        rect = QRectF(self.width() - w - 8, 8, w, fm.height() + 8)
        path = QPainterPath()
        path.addRoundedRect(rect, rect.height() / 2, rect.height() / 2)
        p.fillPath(path, QColor(190, 30, 45, 220))
        p.setFont(font)
        p.setPen(QColor(255, 255, 255))
        p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), text)


def exclude_from_capture(widget: QWidget) -> bool:
    """Ask the OS to leave this window out of screen captures (Windows 10 2004+); True when it did."""
    if sys.platform != "win32":
        return False
    try:
        import ctypes

        return bool(ctypes.windll.user32.SetWindowDisplayAffinity(int(widget.winId()), WDA_EXCLUDEFROMCAPTURE))
    except Exception:
        return False


class CaptureExclusion(QObject):
    """``hide()``/``restore()`` called by the screen source on its thread around every grab.

    The widget work is posted to the GUI thread; the grabbing thread waits for it (≤ ``timeout``)
    and then a short ``settle`` so the X server has unmapped the window before the pixels are read.
    A timeout — e.g. the GUI thread is itself waiting for the session to end — just grabs anyway.
    """

    _hide_requested = Signal()
    _restore_requested = Signal()

    def __init__(self, widgets: list[QWidget], *, timeout: float = 0.5, settle: float = 0.03) -> None:
        super().__init__()
        self.widgets = widgets
        self.timeout = timeout
        self.settle = settle
        self.hidden_count = 0
        self._was_visible: list[QWidget] = []
        self._done = threading.Event()
        self._hide_requested.connect(self._do_hide)
        self._restore_requested.connect(self._do_restore)

    @property
    def needed(self) -> bool:
        return sys.platform != "win32"

    def hide(self) -> None:
        if not self.needed:
            return
        if threading.current_thread() is threading.main_thread():
            self._do_hide()
            return
        self._done.clear()
        self._hide_requested.emit()
        if self._done.wait(self.timeout) and self._was_visible:
            time.sleep(self.settle)

    def restore(self) -> None:
        if not self.needed:
            return
        if threading.current_thread() is threading.main_thread():
            self._do_restore()
            return
        self._restore_requested.emit()  # no need to wait: the picture is already taken

    @Slot()
    def _do_hide(self) -> None:
        self._was_visible = [w for w in self.widgets if w.isVisible()]
        for w in self._was_visible:
            w.hide()
        if self._was_visible:
            self.hidden_count += 1
            QApplication.processEvents()
        self._done.set()

    @Slot()
    def _do_restore(self) -> None:
        for w in self._was_visible:
            w.show()
        self._was_visible = []
