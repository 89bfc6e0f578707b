"""numpy ⇄ Qt picture conversion, kept in one place because the copy rules are easy to get wrong."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def rgb_to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns its pixels: QImage(buffer) only borrows, so ``.copy()`` detaches from numpy."""
    rgb = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgb_to_pixmap(image: np.ndarray, width: int | None = None, height: int | None = None) -> QPixmap:
    pix = QPixmap.fromImage(rgb_to_qimage(image))
    if width and height:
        return pix.scaled(width, height, Qt.AspectRatioMode.KeepAspectRatio,
                          Qt.TransformationMode.SmoothTransformation)
    if width:
        return pix.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    return pix
