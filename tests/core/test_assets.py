"""The asset locator finds icons and the bundled demo model from source and when frozen."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.core import assets

REPO = Path(__file__).resolve().parents[2]


def test_from_source_assets_are_at_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUET_ASSETS_DIR", raising=False)
    assert not assets.is_frozen()
    assert assets.assets_dir() == REPO / "assets"


def test_frozen_assets_are_under_meipass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DUET_ASSETS_DIR", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert assets.is_frozen()
    assert assets.assets_dir() == tmp_path / "assets"
    assert assets.icon_path() is None  # nothing unpacked there: callers get None, not a bad path
    assert assets.bundled_demo() is None


def test_committed_icons_have_every_size_and_the_platform_formats() -> None:
    for size in assets.ICON_SIZES:
        with Image.open(REPO / "assets" / "icons" / f"duet-{size}.png") as im:
            assert im.size == (size, size) and im.mode == "RGBA"
    with Image.open(REPO / "assets" / "icons" / "duet.ico") as ico:
        assert (256, 256) in ico.info["sizes"] and (16, 16) in ico.info["sizes"]
    with Image.open(REPO / "assets" / "icons" / "duet.icns") as icns:
        assert icns.format == "ICNS"
    assert assets.icon_path(100) == REPO / "assets" / "icons" / "duet-128.png"
    assert assets.icon_path(4096) == REPO / "assets" / "icons" / "duet-512.png"


def test_the_bundled_demo_model_is_intact_and_says_where_it_came_from() -> None:
    b = assets.bundled_demo()
    assert b is not None, "assets/models/demo is missing: python assets/bundle_demo.py"
    assert assets.verify_bundled(b) == []
    prov = b.provenance
    assert prov["recipe"] == "models/recipes/demo.toml" and len(prov["code_commit"]) == 40
    assert b.model.stat().st_size + b.mmproj.stat().st_size < 20e6  # "a few MB"


def _copy_demo(tmp_path: Path) -> Path:
    src = REPO / "assets" / "models" / "demo"
    dst = tmp_path / "assets" / "models" / "demo"
    shutil.copytree(src, dst)
    return dst


def test_a_damaged_bundled_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dst = _copy_demo(tmp_path)
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "assets"))
    b = assets.bundled_demo()
    assert b is not None
    data = bytearray(b.model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    b.model.write_bytes(bytes(data))
    problems = assets.verify_bundled(b)
    assert len(problems) == 1 and "sha256" in problems[0]
    b.mmproj.write_bytes(b"short")
    assert len(assets.verify_bundled(b)) == 2
    (dst / "provenance.json").write_text("{not json")
    assert assets.bundled_demo() is None


def test_provenance_naming_a_missing_file_means_no_bundled_model(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    dst = _copy_demo(tmp_path)
    monkeypatch.setenv("DUET_ASSETS_DIR", str(tmp_path / "assets"))
    prov = json.loads((dst / "provenance.json").read_text())
    prov["files"]["mmproj"]["name"] = "mmproj-elsewhere.gguf"
    (dst / "provenance.json").write_text(json.dumps(prov))
    assert assets.bundled_demo() is None
