"""Fine-tuning starts from the bundled demo when none was trained on this machine (a fresh install)."""

from __future__ import annotations

import dataclasses
import json

from app.trainer import feedback_job


def test_the_demo_base_is_the_bundled_model_when_none_was_trained_here(tmp_path, monkeypatch) -> None:
    real = feedback_job._demo_cfg()
    monkeypatch.setattr(feedback_job, "_demo_cfg", lambda: dataclasses.replace(real, out_dir=str(tmp_path / "demo")))
    monkeypatch.setattr(feedback_job, "REPO", tmp_path)  # nor the checkout's own trained demo
    hf, is_demo = feedback_job.resolve_base("demo")
    assert is_demo and hf == tmp_path / "demo" / "bundled" / "hf"
    assert json.loads((hf / "config.json").read_text())["model_type"] in ("qwen2_5_vl", "qwen2_vl")
    made = (hf / "model.safetensors").stat().st_mtime_ns
    assert feedback_job.resolve_base("demo") == (hf, True)  # made once, then reused
    assert (hf / "model.safetensors").stat().st_mtime_ns == made
