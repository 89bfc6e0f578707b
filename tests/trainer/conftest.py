"""Fixtures of the trainer's tests: a small synthetic video with a known event (written once per module), and the
bundled demo model as HF weights to train from."""

from __future__ import annotations

import pytest

from app.eval.synthetic import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    v = make_video("appear", "easy", 0, seed=3)
    p = tmp_path_factory.mktemp("vid") / "v.avi"
    v.write(p)
    return v, p


@pytest.fixture(scope="session")
def bundled_demo_hf(bundled_demo_model, tmp_path_factory):
    """The demo shipped in assets/models/demo as an HF checkpoint folder (tests/trainer/bundled_hf.py): the same
    weights on every machine, unlike a demo trained here."""
    from app.trainer.config import DEFAULT_DEMO_RECIPE, load_config
    from app.trainer.modeling import base_checkpoint
    from tests.trainer.bundled_hf import hf_from_gguf

    template = base_checkpoint(load_config(str(DEFAULT_DEMO_RECIPE)))  # the tiny model the demo recipe starts from
    pair = (template.parent / "tiny-f32.gguf", template.parent / "mmproj-tiny-f32.gguf")  # its cached conversion
    return hf_from_gguf(*bundled_demo_model, template, pair, tmp_path_factory.mktemp("bundled-demo") / "hf")
