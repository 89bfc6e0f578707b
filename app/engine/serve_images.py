"""Images from a ``duet serve`` request, brought to the frame budget before the vision encoder sees them.

The vision encoder works on the picture at the size it is given, up to its own ceiling (1792×1792 for
MMDuet2's projector): a 4000×4000 PNG of 15 KB, under the 16-megapixel cap, became 4,096 visual tokens,
5.5 GB and 150 s of encoding that nothing could interrupt, while every other chat waited. A live session
never sends more than its frame budget (``tokens_per_frame``, 128 tokens as trained: both sides multiples
of 28 px within 128 × 28² pixels, :func:`app.core.vision.smart_resize`), so the server holds every image
to the same geometry: one over the budget is resized here, in the guard's worker thread, to the size the
session itself would have sent; one within it is passed on byte for byte (a Duet client's frames arrive
already fitted, and must reach the model unchanged).

Memory: images are decoded one at a time, and at most :data:`DECODES` at once across all requests, and
only the resized copy (≤ ``tokens_per_image`` × 28² pixels) is kept; a JPEG is decoded straight at a
reduced scale (``draft``). So a request holds at most one full decoded image (≤ ``max_image_pixels`` × 4
bytes, plus its RGB copy) at any moment, whatever the number of images it carries.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import TYPE_CHECKING

from app.core.vision import MAX_ASPECT, max_pixels_for, smart_resize
from app.engine.serve_policy import ImageRefused

if TYPE_CHECKING:
    from app.engine.serve_policy import ServePolicy

log = logging.getLogger("duet.serve")

DECODES = 2  # full-size decodes at once, server-wide: each may take up to ~112 MB (a 16-Mpixel RGBA image + RGB)
_decoding = threading.BoundedSemaphore(DECODES)


def budget_size(width: int, height: int, tokens: int) -> tuple[int, int] | None:
    """(width, height) the session would send this picture at, or None if it is within the budget as is."""
    if width * height <= max_pixels_for(tokens) and max(width, height) / min(width, height) <= MAX_ASPECT:
        return None
    if max(width, height) / min(width, height) > MAX_ASPECT:  # a thin strip: centre-cropped, as fit_frame does
        width, height = min(width, height * MAX_ASPECT), min(height, width * MAX_ASPECT)
    th, tw = smart_resize(height, width, max_pixels=max_pixels_for(tokens))
    return tw, th


def fit_to_budget(data: bytes, policy: ServePolicy) -> bytes | None:
    """A PNG of the image resized to ``policy.tokens_per_image``, or None when it is within the budget.

    The caller has already checked the image's pixel count against ``max_image_pixels`` from its header
    (:func:`app.engine.serve_policy.check_image`), so the decode here is bounded.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        size = budget_size(w, h, policy.tokens_per_image)
        if size is None:
            return None
        tw, th = size
        with _decoding:
            try:
                im.draft("RGB", (tw, th))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below the target
                if max(w, h) / min(w, h) > MAX_ASPECT:
                    cw, ch = min(w, h * MAX_ASPECT), min(h, w * MAX_ASPECT)
                    sx, sy = im.size[0] / w, im.size[1] / h  # draft may have scaled the decode
                    left, top = (w - cw) // 2, (h - ch) // 2
                    im = im.crop((int(left * sx), int(top * sy), int((left + cw) * sx), int((top + ch) * sy)))
                rgb = im.convert("RGB")
                down = tw * th < rgb.size[0] * rgb.size[1]
                # BOX averages the pixels a target pixel covers (cv2's INTER_AREA, what fit_frame uses to shrink)
                fitted = rgb.resize((tw, th), Image.Resampling.BOX if down else Image.Resampling.BICUBIC)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise ImageRefused(f"an image of {w}×{h} pixels could not be decoded ({type(e).__name__})") from None
            del rgb
    out = io.BytesIO()
    fitted.save(out, format="PNG", compress_level=1)  # lossless; level 1: the bytes only cross to the encoder
    log.debug("image of %d×%d px resized to %d×%d (the %d-token frame budget)", w, h, tw, th,
              policy.tokens_per_image)
    return out.getvalue()
