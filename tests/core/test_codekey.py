"""The code key of cached artifacts: a change to any module that makes them changes the key, others do not."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.core.codekey import SOURCE_ROOT, code_key, source_closure


def _copy_app(tmp_path: Path) -> Path:
    shutil.copytree(SOURCE_ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_closure_follows_lazy_and_relative_imports(tmp_path: Path) -> None:
    root = tmp_path
    (root / "app" / "pkg").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "pkg" / "__init__.py").write_text("")
    (root / "app" / "pkg" / "a.py").write_text("def f():\n    from . import b\n    from app.pkg.c import thing\n")
    (root / "app" / "pkg" / "b.py").write_text("import os\n")
    (root / "app" / "pkg" / "c.py").write_text("thing = 1\n")
    (root / "app" / "pkg" / "unrelated.py").write_text("")
    assert list(source_closure(["app.pkg.a"], root)) == ["app", "app.pkg", "app.pkg.a", "app.pkg.b", "app.pkg.c"]


def test_tiny_model_key_follows_the_converter_not_the_gui(tmp_path: Path) -> None:
    root = _copy_app(tmp_path)
    before = code_key("app.modelhub.tiny", source_root=root)
    assert before == code_key("app.modelhub.tiny")  # the copy is the same code
    files = source_closure(["app.modelhub.tiny"], root)
    assert {"app.modelhub.convert", "app.core.protocol"} <= files.keys()

    gui = root / "app" / "ui" / "main_window.py"
    gui.write_text(gui.read_text() + "\n# unrelated change\n")
    assert code_key("app.modelhub.tiny", source_root=root) == before

    conv = root / "app" / "modelhub" / "convert.py"
    conv.write_text(conv.read_text().replace("def convert(", "def convert(  ", 1))
    assert code_key("app.modelhub.tiny", source_root=root) != before


def test_demo_key_covers_trainer_data_and_reward(tmp_path: Path) -> None:
    files = source_closure(["app.trainer.sft", "app.trainer.grpo"])
    for m in ("app.trainer.data", "app.trainer.reward", "app.trainer.modeling", "app.eval.synthetic",
              "app.modelhub.tiny", "app.modelhub.convert"):
        assert m in files, m
    root = _copy_app(tmp_path)
    before = code_key("app.trainer.sft", "app.trainer.grpo", source_root=root)
    reward = root / "app" / "trainer" / "reward.py"
    reward.write_text(reward.read_text().replace("OMEGA = 0.5", "OMEGA = 0.6"))
    assert code_key("app.trainer.sft", "app.trainer.grpo", source_root=root) != before


def test_frozen_build_without_sources_falls_back_to_the_version(tmp_path: Path) -> None:
    from app import __version__

    key = code_key("app.modelhub.tiny", source_root=tmp_path)  # no sources there
    assert key.startswith("v") and len(key) == 12
    assert key != code_key("app.modelhub.tiny") and __version__
