"""Shared fixtures: the tiny model (built once per machine, cached) and the real Debian test videos."""

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
def demo_model(tiny_model):
    """The offline demo model trained by `duet train demo` (cached in .cache/train/demo): (model, mmproj)."""
    import io

    from app.modelhub.library import ModelLibrary
    from app.trainer.cli import run_action

    data_dir = REPO / ".cache" / "test-data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUET_DATA_DIR", str(data_dir))  # never the user's library
        log = io.StringIO()
        rc = run_action("demo", None, {"out_dir": str(REPO / ".cache" / "train" / "demo")}, stream=log)
        assert rc == 0, log.getvalue()[-2000:]
        entry = ModelLibrary(data_dir / "models").get("demo")
    assert entry is not None
    return entry.model, entry.mmproj
