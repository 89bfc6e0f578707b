"""``duet eval`` end to end: the tiny llama.cpp model on a generated synthetic set, report files on disk.

The tiny model is random, so its PAUC is meaningless; what is checked is that the whole path runs
(synthetic videos → VideoFileSource → ProactiveSession → LlamaBackend → judge → report) and that
every artefact is there and well formed. A rerun must come from disk without loading the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.eval.cli import main
from app.eval.synthetic import SyntheticConfig, make_synthetic


def test_duet_eval_tiny_model_on_a_synthetic_set(tiny_model, tmp_path: Path) -> None:
    data = tmp_path / "synth"
    make_synthetic(data, SyntheticConfig(families=("appear", "count"), per_family=1, size=84))
    out = tmp_path / "run"
    argv = [str(data), "--model", str(tiny_model.model), "--mmproj", str(tiny_model.mmproj),
            "--out", str(out), "--threads", "1", "--n-ctx", "2048", "--max-new-tokens", "16"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert summary["n_examples"] == 2 and summary["n_turns"] >= 2
    scored = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == summary["n_turns"]
    for w in ("0.0", "0.5", "1.0"):  # the headline is the turn-weighted mean of what scores.jsonl holds
        assert summary["pauc"][w] == pytest.approx(sum(t["pauc"][w] for t in scored) / len(scored))
    assert report["judge"]["id"] == "exact-match:1" and report["settings"]["model"].startswith(tiny_model.model.name)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["n_turns"] for p in preds] == [4, 4] and all(p["error"] is None for p in preds)  # 8 s, 2 × 1 s a turn
    assert "PAUC ω=0.5 (headline)" in (out / "report.md").read_text()
    for e in report["examples"]:
        assert (out / e["timeline"]).read_bytes()[:4] == b"\x89PNG"
    before = (out / "predictions.jsonl").read_bytes()
    assert main(argv) == 0  # resumed: nothing left to run, verdicts from the cache
    assert (out / "predictions.jsonl").read_bytes() == before
    assert json.loads((out / "report.json").read_text())["judge"]["judged"] == 0
