"""The Train page's loss and reward curves (drawn with QPainter; no plotting library in the app)."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QWidget


class Curves(QWidget):
    """Loss (per SFT step) and reward (per GRPO step) as two line plots, drawn with QPainter."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(220)
        self.loss: list[tuple[int, float]] = []
        self.reward: list[tuple[int, float]] = []

    def clear(self) -> None:
        self.loss, self.reward = [], []
        self.update()

    def add(self, series: str, step: int, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        pts = self.loss if series == "loss" else self.reward
        pts[:] = [p for p in pts if p[0] < step]  # a resumed job repeats no step, but be safe
        pts.append((step, value))
        self.update()

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#111318"))
        panels = [("loss", self.loss, QColor("#5b8cff"))]
        if self.reward:
            panels.append(("reward", self.reward, QColor("#ffb347")))
        w = self.width() / len(panels)
        for k, (name, pts, colour) in enumerate(panels):
            self._panel(p, k * w + 8, 8, w - 16, self.height() - 16, name, pts, colour)
        p.end()

    def _panel(self, p: QPainter, x: float, y: float, w: float, h: float, name: str,
               pts: list[tuple[int, float]], colour: QColor) -> None:
        p.setPen(QPen(QColor("#2c313d"), 1))
        p.drawRect(int(x), int(y), int(w), int(h))
        p.setPen(QColor("#8a93a6"))
        last = f" = {pts[-1][1]:.3f} at step {pts[-1][0]}" if pts else " (no data yet)"
        p.drawText(int(x + 8), int(y + 18), f"{name}{last}")
        if len(pts) < 2:
            return
        xs = [s for s, _ in pts]
        ys = [v for _, v in pts]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        x0, x1 = min(xs), max(xs)
        left, top, pw, ph = x + 40, y + 28, w - 52, h - 44
        p.drawText(int(x + 4), int(top + 10), f"{hi:.2f}")
        p.drawText(int(x + 4), int(top + ph), f"{lo:.2f}")
        p.drawText(int(left + pw - 40), int(y + h - 4), f"step {x1}")
        path = QPainterPath()
        for i, (s, v) in enumerate(pts):
            pt = QPointF(left + pw * (s - x0) / max(1, x1 - x0), top + ph * (1 - (v - lo) / (hi - lo)))
            path.moveTo(pt) if i == 0 else path.lineTo(pt)
        p.setPen(QPen(colour, 2))
        p.drawPath(path)
