"""Resizing a captured frame to the model's visual-token budget (see ``app.core.vision``)."""

from __future__ import annotations

import cv2
import numpy as np

from app.core.protocol import DEFAULT_TOKENS_PER_FRAME
from app.core.vision import MAX_ASPECT, max_pixels_for, smart_resize


def fit_frame(image: np.ndarray, tokens_per_frame: int = DEFAULT_TOKENS_PER_FRAME) -> np.ndarray:
    """Resize an RGB uint8 frame so both sides are multiples of 28 within the token budget.

    Thin strips beyond Qwen's 1:200 aspect limit are centre-cropped first. INTER_AREA for
    downscaling (keeps screen text legible), cubic when a tiny region must grow.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an H×W×3 RGB frame, got shape {image.shape}")
    h, w = image.shape[:2]
    if max(h, w) / min(h, w) > MAX_ASPECT:
        if h > w:
            keep = w * MAX_ASPECT
            top = (h - keep) // 2
            image = image[top:top + keep]
        else:
            keep = h * MAX_ASPECT
            left = (w - keep) // 2
            image = image[:, left:left + keep]
        h, w = image.shape[:2]
    th, tw = smart_resize(h, w, max_pixels=max_pixels_for(tokens_per_frame))
    if (th, tw) == (h, w):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (tw, th), interpolation=interp))
