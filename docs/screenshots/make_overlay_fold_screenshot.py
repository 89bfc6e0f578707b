"""The overlay folding a true repeat, closed and opened, over a video frame, under a real X server.

    Xvfb :99 -screen 0 1600x1000x24 &  xcompmgr -d :99 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python docs/screenshots/make_overlay_fold_screenshot.py

The real ``Overlay`` widget, fed the replies the demo model gives on its synthetic shapes (the words
of issue 26: a new shape or colour is never folded, "The circle appeared." said three times is), over
a frame of Debian's vtest.avi so its translucency shows. Left: the fold closed ("×3 ▾", the latest
time); right: after a click on the badge, the folded replies with their times.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = Path(__file__).resolve().parent
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def main() -> int:
    from PySide6.QtCore import QPoint, QRect, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QMouseEvent, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication, QLabel

    from app.ui.overlay import Overlay

    app = QApplication.instance() or QApplication(sys.argv[:1])
    cap = cv2.VideoCapture(str(VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 120)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read {VIDEO} (install Debian's opencv-doc)")
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    image = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888).copy()
    backdrop = QLabel()
    backdrop.setWindowFlag(Qt.WindowType.FramelessWindowHint)
    backdrop.setPixmap(QPixmap.fromImage(image))
    backdrop.move(0, 0)
    backdrop.resize(image.size())
    backdrop.show()

    def settle(seconds: float = 0.6) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    def shot(ov: Overlay) -> QPixmap:
        settle()
        g = ov.frameGeometry()
        return QGuiApplication.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height())

    ov = Overlay(fade_seconds=600.0)
    ov.resize(460, 220)
    ov.move(290, 560 - 220)
    ov.set_user_visible(True)
    for stamp, text in (("00:02", "A red square appeared."), ("00:04", "The circle appeared."),
                        ("00:06", "The triangle appeared."), ("00:08", "the circle appeared"),
                        ("00:10", "A yellow circle appeared."), ("00:12", "The circle appeared!")):
        ov.add_reply(text, stamp)
    closed = shot(ov)
    badge = next(rect for rect, _card in ov.fold_rects)
    at = badge.center()
    press = QMouseEvent(QMouseEvent.Type.MouseButtonPress, at, ov.mapToGlobal(at), Qt.MouseButton.LeftButton,
                        Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    ov.mousePressEvent(press)
    opened = shot(ov)
    gap = 24
    width = closed.width() + gap + opened.width()
    height = max(closed.height(), opened.height())
    out = QPixmap(width, height)
    out.fill(Qt.GlobalColor.white)
    p = QPainter(out)
    p.drawPixmap(QPoint(0, height - closed.height()), closed)
    p.drawPixmap(QRect(closed.width() + gap, height - opened.height(), opened.width(), opened.height()), opened)
    p.end()
    out.save(str(OUT / "overlay-fold.png"))
    print(f"wrote {OUT / 'overlay-fold.png'}: painted {ov.painted}")
    ov.close()
    backdrop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
