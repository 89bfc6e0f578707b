"""Shared fixtures: the tiny model (built once per machine, cached), the bundled demo model and the real Debian
test videos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

# Tests must never reach a network; the tiny model cache lives in the repo's ignored .cache/.
os.environ.setdefault("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny random Qwen2.5-VL: ``.hf_dir`` (transformers), ``.model`` and ``.mmproj`` (F32 GGUF)."""
    from app.modelhub.tiny import build_tiny

    return build_tiny()


def _video(name: str) -> Path:
    p = OPENCV_DATA / name
    if not p.exists():
        pytest.fail(f"{p} is missing: install Debian's opencv-doc (the README's `make test` does)")
    return p


@pytest.fixture(scope="session")
def vtest_avi() -> Path:
    """A real street scene (768×576, 10 fps, ~80 s) from Debian's opencv-doc."""
    return _video("vtest.avi")


@pytest.fixture(scope="session")
def tree_avi() -> Path:
    return _video("tree.avi")


@pytest.fixture(scope="session")
def bundled_demo_model() -> tuple[Path, Path]:
    """The demo model shipped in assets/models/demo: (model, mmproj), the same weights on every machine.

    Tests of what a trained model does run on this one rather than on a demo trained here: training on
    another CPU family gives other weights, and so other replies (issue 23). `duet train demo` itself is
    tested in tests/trainer/test_demo.py.
    """
    from app.core.assets import bundled_demo, verify_bundled

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DUET_ASSETS_DIR", raising=False)  # the checkout's own assets/
        demo = bundled_demo()
    if demo is None:
        pytest.fail(f"{REPO / 'assets' / 'models' / 'demo'}: the bundled demo model is missing (see assets/README.md)")
    problems = verify_bundled(demo)
    assert not problems, problems
    return demo.model, demo.mmproj
