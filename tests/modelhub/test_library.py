"""A fresh install lists and runs the bundled demo model; the user's own "demo" replaces it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.cli import main
from app.core.assets import bundled_demo
from app.modelhub.library import ModelLibrary, resolve_model
from app.modelhub.validate import ModelFileError
from app.trainer.demo import demo_registered


@pytest.fixture
def empty_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DUET_ASSETS_DIR", raising=False)
    return tmp_path / "data"


def test_an_empty_library_offers_the_bundled_demo_read_only(empty_data: Path) -> None:
    b = bundled_demo()
    assert b is not None
    lib = ModelLibrary()
    [entry] = lib.entries()
    assert (entry.name, entry.source, entry.model, entry.mmproj) == ("demo", "builtin", b.model, b.mmproj)
    assert lib.user_entries() == []
    assert resolve_model("demo") == (b.model, b.mmproj)
    with pytest.raises(ModelFileError, match="read-only"):
        lib.remove("demo")
    assert not lib.index.exists()  # listing the built-in model writes nothing
    assert not demo_registered("demo")  # `duet train demo --if-missing` still trains the user's own


def test_the_users_demo_takes_the_place_of_the_bundled_one(empty_data: Path) -> None:
    b = bundled_demo()
    assert b is not None
    lib = ModelLibrary()
    mine = lib.add("demo", b.model, b.mmproj, source="demo")
    assert [(e.name, e.source) for e in lib.entries()] == [("demo", "demo")]
    assert resolve_model("demo") == (mine.model, mine.mmproj) and mine.model.parent == empty_data / "models" / "demo"
    assert [m["source"] for m in json.loads(lib.index.read_text())["models"]] == ["demo"]
    lib.remove("demo", delete_files=True)
    assert [(e.name, e.source) for e in lib.entries()] == [("demo", "builtin")]


def test_a_fresh_install_narrates_a_clip_with_the_bundled_model(empty_data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing trained, nothing downloaded: `duet run` on a held-out synthetic clip replies (real llama.cpp)."""
    assert main(["eval", "make-synthetic", str(tmp_path / "clips"), "--families", "appear", "--difficulty", "easy",
                 "--per-family", "1", "--seed", "7"]) == 0
    capsys.readouterr()
    clip = tmp_path / "clips" / "videos" / "appear-easy-000.avi"
    assert main(["run", "--source", str(clip), "--fast", "--ask", "Tell me when a new shape appears."]) == 0
    out = capsys.readouterr().out
    replies = [ln for ln in out.splitlines() if re.match(r"\[\d\d:\d\d\] (?!\(you\))", ln)]
    assert replies, out
    assert not (empty_data / "models" / "library.json").exists()
