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
    """The demo shipped in assets/models/demo as an HF checkpoint folder (app/trainer/bundled_demo.py): the same
    weights on every machine, unlike a demo trained here."""
    from app.trainer.bundled_demo import bundled_demo_checkpoint

    return bundled_demo_checkpoint(tmp_path_factory.mktemp("bundled-demo") / "hf")
