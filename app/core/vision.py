"""Frame geometry shared by capture, engine, evaluation and training: the visual-token budget.

Qwen2.5-VL cuts a picture into 14-px patches merged 2×2, so one visual token covers 28×28 px.
MMDuet2 was trained at ≤128 tokens a frame. llama.cpp and transformers resize differently
(llama.cpp pads to keep the aspect ratio, HF stretches), so we resize *before* either sees the frame
to a size both leave alone: both sides multiples of 28, within the pixel budget.
"""

from __future__ import annotations

import math

from app.core.protocol import DEFAULT_TOKENS_PER_FRAME, PATCH_PX

MAX_ASPECT = 200  # Qwen's limit on long side / short side


def max_pixels_for(tokens_per_frame: int = DEFAULT_TOKENS_PER_FRAME) -> int:
    return tokens_per_frame * PATCH_PX * PATCH_PX


def smart_resize(height: int, width: int, factor: int = PATCH_PX, min_pixels: int = 4 * 28 * 28,
                 max_pixels: int = max_pixels_for()) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept.

    Same rule as qwen-vl-utils' ``smart_resize``, except that an extreme aspect ratio is clamped
    (the caller crops) instead of raising, because a screen region can legitimately be a thin strip.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame has zero size ({width}×{height})")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        if height > width:
            height = width * MAX_ASPECT
        else:
            width = height * MAX_ASPECT
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def tokens_for(height: int, width: int) -> int:
    """Merged visual tokens of an image already at a smart-resized size."""
    return (height // PATCH_PX) * (width // PATCH_PX)
