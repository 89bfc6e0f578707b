"""`duet train demo` end to end on the tiny model and synthetic videos: SFT → GRPO → GGUF → library.

The run is cached in the repo's ignored .cache/train/demo (like the tiny model) and registered in a
library under .cache/test-data (DUET_DATA_DIR), so the suite trains it once: a later run resumes every
stage from its finished checkpoint and only re-exports (seconds). A changed recipe is detected by its
hash; delete .cache/train/demo to retrain.
The numbers asserted are the measured ones the closing note reports, with margin; no timing is asserted.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / ".cache" / "train" / "demo"
DATA_DIR = REPO / ".cache" / "test-data"
SILENCE_PAUC = 0.25  # a model that never speaks scores 0.5 / 2 on every gold turn


@pytest.fixture(scope="session")
def demo(tiny_model):
    from app.trainer.cli import run_action

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUET_DATA_DIR", str(DATA_DIR))  # the library the demo is registered in: never the user's home
        out = io.StringIO()
        rc = run_action("demo", None, {"out_dir": str(OUT)}, stream=out)
        events = [json.loads(x) for x in out.getvalue().splitlines()]
        assert rc == 0, events[-3:]
        summary = json.loads((OUT / "demo_summary.json").read_text())
        yield summary, events


def test_sft_lowers_the_loss(demo):
    summary, _ = demo
    losses = summary["sft"]["losses"]
    assert sum(losses[-20:]) / 20 < 0.25 * sum(losses[:20]) / 20


def test_sft_makes_the_model_reply_right_and_on_time(demo):
    summary, _ = demo
    evals = summary["sft"]["evals"]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == len(summary["sft"]["losses"])
    assert last["pauc"] > first["pauc"] + 0.1
    assert last["pauc"] > SILENCE_PAUC + 0.05
    assert last["replies"] > 0


def test_the_trained_model_reads_the_frames(demo):
    """Same targets, frames swapped between clips of a task: the answers' texts must suffer."""
    summary, _ = demo
    last = summary["sft"]["evals"][-1]
    assert last["tf"]["reply_text"] >= last["tf_shuffled"]["reply_text"] + 0.15


def test_grpo_reports_reward_parts_every_step(demo):
    summary, _ = demo
    rewards = summary["grpo"]["rewards"]
    assert rewards and all({"reward", "pauc", "rep", "in_span", "pfx"} <= set(r) for r in rewards)
    for r in rewards:
        assert r["reward"] == pytest.approx(3 * r["pauc"] + 2 * r["rep"] + 0.5 * r["in_span"] + 2 * r["pfx"])
    assert summary["grpo"]["evals"][-1]["pauc"] > SILENCE_PAUC


def test_exported_gguf_reproduces_the_trained_decisions(demo):
    summary, _ = demo
    par = summary["parity"]
    assert par["turns"] >= 40
    assert par["decision_agreement"] >= 0.95
    assert par["both_spoke"] > 0
    assert par["text_agreement"] >= 0.8


def test_registered_as_demo_and_selectable(demo):
    from app.modelhub.library import ModelLibrary, resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUET_DATA_DIR", str(DATA_DIR))
        lib = ModelLibrary()
        entry = lib.get("demo")
        assert entry is not None and entry.source == "demo"
        assert Path(entry.model).resolve().is_relative_to(DATA_DIR.resolve())
        model, mmproj = resolve_model("demo", library=ModelLibrary())  # a fresh read: no restart needed
        assert model.is_file() and mmproj.is_file()
