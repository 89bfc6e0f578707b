"""fit_frame: every frame reaches the model at a size both llama.cpp and transformers leave alone."""

from __future__ import annotations

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from app.capture.resize import fit_frame
from app.core.vision import tokens_for

BUDGET_PX = 128 * 28 * 28  # 100,352


@pytest.mark.parametrize("h, w", [(576, 768), (1080, 1920), (2160, 3840), (240, 320), (1000, 1000),
                                  (300, 1200), (1200, 300), (27, 45)])
def test_sizes_are_multiples_of_28_within_budget_and_keep_aspect(h, w):
    rng = np.random.default_rng(h * 7919 + w)
    out = fit_frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    th, tw = out.shape[:2]
    assert out.shape[2] == 3 and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert th % 28 == 0 and tw % 28 == 0
    assert th * tw <= BUDGET_PX and tokens_for(th, tw) <= 128
    # exactly the size Qwen2.5-VL's own processor picks (transformers' smart_resize), so neither
    # transformers nor llama.cpp resizes the frame again
    assert (th, tw) == hf_smart_resize(h, w, 28, 4 * 28 * 28, BUDGET_PX)


def test_large_frames_use_most_of_the_budget():
    out = fit_frame(np.zeros((1080, 1920, 3), np.uint8))
    assert tokens_for(*out.shape[:2]) >= 100  # not needlessly tiny


def test_smaller_budget_is_respected():
    out = fit_frame(np.zeros((1080, 1920, 3), np.uint8), tokens_per_frame=64)
    assert tokens_for(*out.shape[:2]) <= 64


def test_content_survives_resizing():
    img = np.zeros((600, 800, 3), np.uint8)
    img[:, :400] = (255, 0, 0)
    img[:, 400:] = (0, 0, 255)
    out = fit_frame(img)
    assert (out[:, :5] == (255, 0, 0)).all() and (out[:, -5:] == (0, 0, 255)).all()


def test_read_only_capture_frames_are_accepted():
    img = np.full((280, 280, 3), 7, np.uint8)
    img.flags.writeable = False
    out = fit_frame(img)
    assert out.shape == (280, 280, 3) and (out == 7).all()


@pytest.mark.parametrize("transpose", [False, True])
def test_extreme_aspect_is_centre_cropped_not_squashed(transpose):
    # a 10×5000 strip (1:500) exceeds Qwen's 1:200; each column holds its x // 20
    strip = np.repeat((np.arange(5000) // 20).astype(np.uint8)[None, :, None], 10, axis=0).repeat(3, axis=2)
    if transpose:
        strip = np.ascontiguousarray(strip.transpose(1, 0, 2))
    out = fit_frame(strip)
    th, tw = out.shape[:2]
    assert th % 28 == 0 and tw % 28 == 0 and th * tw <= BUDGET_PX
    assert max(th, tw) / min(th, tw) <= 200
    line = out[0, :, 0] if not transpose else out[:, 0, 0]
    # the middle 2000 px (x = 1500 … 3500 → values 75 … 174) were kept; squashing would span 0 … 249
    assert abs(int(line[0]) - 75) <= 3 and abs(int(line[-1]) - 174) <= 3


@pytest.mark.parametrize("shape", [(0, 100, 3), (100, 0, 3), (0, 0, 3)])
def test_zero_size_frame_is_a_value_error(shape):
    with pytest.raises(ValueError):
        fit_frame(np.zeros(shape, np.uint8))


def test_non_rgb_frame_is_a_value_error():
    with pytest.raises(ValueError, match="H×W×3"):
        fit_frame(np.zeros((100, 100), np.uint8))
