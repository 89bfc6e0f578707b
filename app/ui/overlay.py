"""The always-on-top reply overlay: frameless, translucent, draggable, resizable, optionally click-through.

Replies fade out after ``fade_seconds``. A reply that truly repeats one still on screen (the same
words, colours, shapes and numbers: :mod:`app.ui.dedup`) is folded into it instead of being shown and
spoken again: the card moves to the bottom, shows the latest reply and its time and a "×2" badge; a
click on the badge lists the folded replies with their times. The transcript keeps every one.
What a card shows is :func:`~app.ui.reply_text.shown_text` of the reply (no control characters or
special tokens). While capture is on, a red "watching" pill is painted in the corner, so the user
always knows the screen or camera is being looked at.

The overlay (and its pill) stay out of the model's own screen frames: see
:mod:`app.ui.capture_exclusion`.
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QPoint, QRect, QRectF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QGuiApplication,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
)
from PySide6.QtWidgets import QSizeGrip, QWidget

from app.ui.capture_exclusion import exclude_from_capture
from app.ui.dedup import find_repeat
from app.ui.overlay_parts import Card, WatchingPill, wrap_lines
from app.ui.reply_text import shown_text


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
        self.expanded = False
        self._grown_for_fold = False  # the overlay grew to list an opened fold: closing it shrinks it back
        self._collapsed_geometry: QRect | None = None
        self.user_visible = False
        self.pill = WatchingPill()
        self.more_rect: QRect | None = None  # the "Show all" / "Show less" control, when painted
        self.fold_rects: list[tuple[QRect, Card]] = []  # the "×N" badges painted, each opens its fold
        self.drawn: list[tuple[str, bool]] = []  # (text, elided) of the cards in the last paint
        self.painted: list[str] = []  # every string the last paint drew: card by card from the newest (bottom) up
        self._grip = QSizeGrip(self)
        self._grip.resize(16, 16)
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    # ---- content ------------------------------------------------------------------------------
    def add_reply(self, text: str, stamp: str = "") -> bool:
        """Show a reply; False when it was folded into a card on screen or had nothing to show (don't speak it)."""
        text = shown_text(text)  # no control characters or special tokens on screen, whoever calls
        if not text:
            return False
        now = time.monotonic()
        self._expire(now)
        i = find_repeat(text, [c.text for c in self.cards])
        if i is not None:
            # The card now stands for the latest reply: its words, its time, at the bottom with the newest.
            card = self.cards.pop(i)
            card.earlier.append((card.stamp, card.text))
            card.text, card.stamp = text, stamp or card.stamp
            card.count += 1
            card.shown_at = now
            self.cards.append(card)
            self.folded.emit(text)
            self.update()
            return False
        self.cards.append(Card(text, stamp, now))
        del self.cards[:-self.max_cards]
        self.update()
        return True

    def toggle_fold(self, card: Card) -> None:
        """Open or close a fold: list the replies folded into ``card`` with their times (growing to fit)."""
        card.open = not card.open
        card.shown_at = time.monotonic()  # the user is reading it: restart its fade
        if card.open and card in self.cards:
            index = self.cards.index(card)
            width = self.width() - 2 * self.MARGIN
            stack = sum(self._card_height(c, width) + self.GAP for c in self.cards[index:])
            needed = stack + 2 * self.MARGIN + self._top_reserve() + self.MORE_H
            if needed > self.height():
                self._grown_for_fold = self._grown_for_fold or not self.expanded
                self._grow(needed)
        elif self.expanded and self._grown_for_fold and not any(c.open for c in self.cards):
            self.toggle_expanded()
        self.update()

    def clear(self) -> None:
        self.cards.clear()
        self.update()

    def set_capturing(self, on: bool, label: str = "") -> None:
        self.capturing = on
        self.capture_label = label
        self._sync_pill()
        self.update()

    def set_user_visible(self, visible: bool) -> None:
        """Show or hide at the user's request (capture exclusion hides it briefly, without this)."""
        self.user_visible = visible
        self.setVisible(visible)
        if visible:
            self.raise_()
        self._sync_pill()

    def _sync_pill(self) -> None:
        want = self.capturing and not self.user_visible
        if want:
            self.pill.set_label(self.capture_label)
            self.pill.show()
            self.pill.raise_()
        else:
            self.pill.hide()

    @property
    def companions(self) -> list[QWidget]:
        """Other windows of the overlay that must stay out of Duet's own captures too."""
        return [self.pill]

    def bring_to_front(self) -> None:
        """Raise above Duet's main window (called once that is shown: a window mapped later lands on top)."""
        if self.isVisible():
            self.raise_()
        if self.pill.isVisible():
            self.pill.raise_()

    def resting_geometry(self) -> QRect:
        """Where the overlay sits when not expanded for a long reply (what the settings remember)."""
        return QRect(self._collapsed_geometry) if self._collapsed_geometry is not None else QRect(self.geometry())

    def closeEvent(self, event: object) -> None:  # noqa: N802
        self.pill.close()
        super().closeEvent(event)  # type: ignore[arg-type]

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
        if event.button() == Qt.MouseButton.LeftButton and self.more_rect is not None \
                and self.more_rect.contains(event.position().toPoint()):
            self.toggle_expanded()
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton:
            badge = next((c for r, c in self.fold_rects if r.contains(event.position().toPoint())), None)
            if badge is not None:
                self.toggle_fold(badge)
                event.accept()
                return
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

    # ---- long replies -------------------------------------------------------------------------
    _wrap = staticmethod(wrap_lines)  # lines as Qt would break them (app/ui/overlay_parts.py)

    def toggle_expanded(self) -> None:
        """Grow the overlay (upwards, within the screen) to show the newest reply whole, or shrink back
        (closing any fold opened meanwhile: it would not fit the resting size)."""
        if self.expanded:
            self.expanded = False
            self._grown_for_fold = False
            for card in self.cards:
                card.open = False
            if self._collapsed_geometry is not None:
                self.setGeometry(self._collapsed_geometry)
            self._collapsed_geometry = None
            self.update()
            return
        if not self.cards:
            return
        self.cards[-1].shown_at = time.monotonic()  # the user is reading it: restart its fade
        width = self.width() - 2 * self.MARGIN
        self._grow(self._card_height(self.cards[-1], width) + 2 * self.MARGIN + self._top_reserve() + self.MORE_H)

    def _grow(self, needed: int) -> None:
        """Grow upwards to ``needed`` pixels (within the screen), remembering the resting geometry."""
        if self._collapsed_geometry is None:
            self._collapsed_geometry = QRect(self.geometry())
        limit = 10_000
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None:
            limit = screen.availableGeometry().height()
        height = min(max(needed, self.height()), limit)
        g = self.geometry()
        top = g.bottom() + 1 - height
        if screen is not None:
            top = max(top, screen.availableGeometry().top())
        self.expanded = True
        self.setGeometry(g.x(), top, g.width(), height)
        self.update()

    MARGIN, PAD, GAP, MORE_H = 8, 12, 8, 22

    def _fonts(self) -> tuple[QFont, QFont]:
        font = QFont(self.font())
        font.setPointSize(self.font_size)
        small = QFont(font)
        small.setPointSize(max(8, self.font_size - 5))
        return font, small

    def _top_reserve(self) -> int:
        return 26 if self.capturing else 0

    def _fold_height(self, card: Card) -> int:
        """Pixels the list of an opened fold takes under the card's text (0 when closed)."""
        if not (card.open and card.earlier):
            return 0
        _font, small = self._fonts()
        return len(card.fold_lines()) * QFontMetrics(small).lineSpacing() + 6

    def _card_height(self, card: Card, width: int) -> int:
        """The card's whole height at ``width``: its head, every line of its text, an opened fold."""
        font, small = self._fonts()
        fm, sfm = QFontMetrics(font), QFontMetrics(small)
        lines = self._wrap(card.text, font, width - 2 * self.PAD)
        return len(lines) * fm.lineSpacing() + sfm.height() + 2 + 2 * self.PAD - 4 + self._fold_height(card)

    # ---- painting ------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        now = time.monotonic()
        self._expire(now)
        if not self.cards and self.expanded:
            QTimer.singleShot(0, self.toggle_expanded)
        margin, pad, gap = self.MARGIN, self.PAD, self.GAP
        y = self.height() - margin
        font, small = self._fonts()
        fm, sfm = QFontMetrics(font), QFontMetrics(small)
        width = self.width() - 2 * margin
        ceiling = margin + self._top_reserve()
        self.more_rect = None
        self.fold_rects = []
        self.drawn = []
        self.painted = []
        for index, card in enumerate(reversed(self.cards)):  # newest at the bottom, older ones above
            newest = index == 0
            lines = self._wrap(card.text, font, width - 2 * pad)
            head = sfm.height() + 2
            fold_h = self._fold_height(card)
            text_h = len(lines) * fm.lineSpacing()
            h = text_h + head + 2 * pad - 4 + fold_h + (self.MORE_H if newest and self.expanded else 0)
            elided = False
            if y - h < ceiling:
                if not newest:
                    break  # an older card that no longer fits gives way (the chat keeps every reply)
                # The newest reply is never dropped: as many lines as fit, the last one elided,
                # and a "Show all" control that grows the overlay to fit it.
                room = y - ceiling - head - 2 * pad + 4 - self.MORE_H - fold_h
                keep = max(1, room // fm.lineSpacing())
                if keep < len(lines):
                    rest = " ".join(lines[keep - 1:])
                    lines = lines[:keep - 1] + [fm.elidedText(rest, Qt.TextElideMode.ElideRight, width - 2 * pad)]
                    elided = True
                text_h = len(lines) * fm.lineSpacing()
                h = text_h + head + 2 * pad - 4 + fold_h + self.MORE_H
            top = y - h
            alpha = self._alpha(card, now)
            path = QPainterPath()
            path.addRoundedRect(QRectF(margin, top, width, h), 12, 12)
            p.fillPath(path, QColor(18, 20, 28, int(235 * self.panel_opacity * alpha)))
            accent = QColor(150, 190, 255, int(255 * alpha))
            p.setFont(small)
            p.setPen(accent)
            label = f"Duet · {card.stamp}" if card.stamp else "Duet"
            head_rect = QRect(margin + pad, int(top) + pad - 4, width - 2 * pad, head)
            p.drawText(head_rect, 0, label)
            self.painted.append(label)
            if card.count > 1:  # the fold's badge, on the right of the head: a click lists what it folded
                badge = f"×{card.count} {'▴' if card.open else '▾'}"
                bw = sfm.horizontalAdvance(badge) + 12
                rect = QRect(head_rect.right() - bw + 1, head_rect.top() - 2, bw, head + 4)
                pill = QPainterPath()
                pill.addRoundedRect(QRectF(rect), rect.height() / 2, rect.height() / 2)
                p.fillPath(pill, QColor(150, 190, 255, int(60 * alpha)))
                p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), badge)
                self.fold_rects.append((rect, card))
                self.painted.append(badge)
            p.setFont(font)
            p.setPen(QColor(245, 245, 245, int(255 * alpha)))
            baseline = int(top) + pad - 4 + head + fm.ascent()
            for line in lines:
                p.drawText(margin + pad, baseline, line)
                self.painted.append(line)
                baseline += fm.lineSpacing()
            if fold_h:
                p.setFont(small)
                p.setPen(QColor(215, 222, 238, int(245 * alpha)))
                baseline += 6 - fm.ascent() + sfm.ascent()  # 6 px under the text block
                for row in card.fold_lines():
                    row = sfm.elidedText(row, Qt.TextElideMode.ElideRight, width - 2 * pad)
                    p.drawText(margin + pad, baseline, row)
                    self.painted.append(row)
                    baseline += sfm.lineSpacing()
            if newest and (elided or self.expanded):
                more = QRect(margin + pad, int(top + h) - self.MORE_H - 2, width - 2 * pad, self.MORE_H)
                p.setFont(small)
                p.setPen(accent)
                control = "Show less ▴" if self.expanded else "Show all ▾"
                p.drawText(more, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), control)
                self.painted.append(control)
                self.more_rect = more
            self.drawn.append((card.text, elided))
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
