"""Bringing whatever OpenCV or mss hands us to the one layout ``Frame`` promises: H×W×3 RGB uint8, C-contiguous."""

from __future__ import annotations

import cv2
import numpy as np


def to_rgb(image: np.ndarray, *, bgr: bool = True) -> np.ndarray:
    """Convert a BGR/BGRA/grey capture to a fresh read-only RGB array.

    Read-only because one decoded picture can be delivered at several ticks (a 10 fps video sampled
    every 0.05 s), so an in-place edit by one consumer must not leak into another frame.
    """
    if image is None or image.size == 0:
        raise ValueError("empty image")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:  # some cameras (depth, raw) deliver 16-bit
            image = (image >> 8).astype(np.uint8)
        else:
            raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        out = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image.copy()
    elif image.ndim == 3 and image.shape[2] == 4:
        out = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    else:
        raise ValueError(f"unsupported image shape {image.shape}")
    out = np.ascontiguousarray(out)
    out.flags.writeable = False
    return out
