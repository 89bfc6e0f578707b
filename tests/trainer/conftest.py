"""Fixtures of the trainer's tests: a small synthetic video with a known event (written once per module)."""

from __future__ import annotations

import pytest

from app.eval.synthetic import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    v = make_video("appear", "easy", 0, seed=3)
    p = tmp_path_factory.mktemp("vid") / "v.avi"
    v.write(p)
    return v, p
