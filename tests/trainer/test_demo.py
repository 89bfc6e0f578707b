"""`duet train demo` end to end on the tiny model and synthetic videos: SFT → GGUF → library (GRPO only when asked).

The run is cached in the repo's ignored .cache/train/demo (like the tiny model) and registered in a
library under .cache/test-data (DUET_DATA_DIR), so the suite trains it once: a later run resumes every
stage from its finished checkpoint and only re-exports (seconds). The cached run is keyed on the recipe
*and* the training code (demo_key.json): a change to either trains it again, so these tests always check
a model made by the code under test.
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


def test_grpo_is_off_by_default_and_the_sft_model_is_exported(demo):
    """GRPO adds nothing on the demo (docs/training-estimates.md), so the default run does not run it and ships SFT."""
    summary, events = demo
    assert summary["stages"] == ["sft"] and "grpo" not in summary
    assert not any(e.get("stage") == "grpo" for e in events)
    assert any(e["event"] == "note" and "--with-grpo" in e.get("message", "") for e in events)
    start = next(e for e in events if e["event"] == "start" and e.get("stage") == "export")
    assert Path(start["source"]) == OUT / "sft" / "final"


def test_with_grpo_flag_reaches_the_demo_run() -> None:
    from app.cli import build_parser

    args = build_parser().parse_args(["train", "demo", "--with-grpo"])
    assert args.with_grpo is True
    assert build_parser().parse_args(["train", "demo"]).with_grpo is False


def test_grpo_from_the_demo_sft_reports_reward_parts_every_step(demo, tmp_path: Path) -> None:
    """`duet train grpo` on the demo recipe, from the demo's SFT model (a short run: the pipeline, not a gain)."""
    from app.trainer.cli import DEFAULT_DEMO_RECIPE, run_action

    for d in ("sft", "data"):  # the demo's SFT model and its generated videos, read only
        (tmp_path / d).symlink_to(OUT / d)
    out = io.StringIO()
    rc = run_action("grpo", str(DEFAULT_DEMO_RECIPE), {"out_dir": str(tmp_path), "grpo.steps": 2,
                                                       "grpo.eval_limit": 4}, stream=out)
    events = [json.loads(x) for x in out.getvalue().splitlines()]
    assert rc == 0, events[-3:]
    summary = json.loads((tmp_path / "grpo" / "summary.json").read_text())
    rewards = summary["rewards"]
    assert [r["step"] for r in rewards] == [1, 2]
    for r in rewards:
        assert {"reward", "pauc", "rep", "in_span", "pfx"} <= set(r)
        assert r["reward"] == pytest.approx(3 * r["pauc"] + 2 * r["rep"] + 0.5 * r["in_span"] + 2 * r["pfx"])
    assert [e["step"] for e in summary["evals"]] == [0, 2]
    assert (tmp_path / "grpo" / "final" / "config.json").is_file()


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


def test_cached_run_is_keyed_on_this_code_and_recipe(demo):
    from app.trainer.cli import DEFAULT_DEMO_RECIPE
    from app.trainer.config import load_config
    from app.trainer.demo import KEY_FILE, demo_key

    cfg = load_config(str(DEFAULT_DEMO_RECIPE), {"out_dir": str(OUT)})
    assert json.loads((OUT / KEY_FILE).read_text()) == demo_key(cfg)


def _stale_run(out: Path, key: dict | None) -> None:
    (out / "sft" / "ckpt" / "step-000250").mkdir(parents=True)
    (out / "data").mkdir()
    (out / "demo_summary.json").write_text("{}")
    if key is not None:
        (out / "demo_key.json").write_text(json.dumps(key))


def test_a_run_made_by_other_code_is_trained_again_not_refused(tmp_path: Path) -> None:
    """A cache left by an older Duet must not make `duet train demo` exit 2 ("different recipe")."""
    from app.trainer.cli import DEFAULT_DEMO_RECIPE
    from app.trainer.config import load_config
    from app.trainer.demo import KEY_FILE, demo_key, discard_stale_run
    from app.trainer.jobs import Reporter

    cfg = load_config(str(DEFAULT_DEMO_RECIPE), {"out_dir": str(tmp_path / "demo")})
    key = demo_key(cfg)
    for old, why in ((None, "no key"), ({**key, "code": "0" * 12}, "code changed"),
                     ({**key, "sft": "f" * 16}, "sft changed")):
        _stale_run(cfg.out, old)
        rep = Reporter()
        assert discard_stale_run(cfg, rep) is True
        assert not (cfg.out / "sft").exists() and not (cfg.out / "data").exists()
        assert not (cfg.out / "demo_summary.json").exists()
        assert rep.events[-1]["event"] == "note" and why in rep.events[-1]["message"], rep.events
        assert json.loads((cfg.out / KEY_FILE).read_text()) == key

    (cfg.out / "sft" / "ckpt").mkdir(parents=True)  # made by this code: resumed, not deleted
    rep = Reporter()
    assert discard_stale_run(cfg, rep) is False
    assert (cfg.out / "sft" / "ckpt").is_dir() and rep.events == []


def test_someone_elses_run_is_never_deleted(tmp_path: Path) -> None:
    from app.trainer.cli import DEFAULT_DEMO_RECIPE
    from app.trainer.config import load_config
    from app.trainer.demo import discard_stale_run
    from app.trainer.jobs import Reporter

    recipe = tmp_path / "mine.toml"
    recipe.write_text(DEFAULT_DEMO_RECIPE.read_text())
    out = tmp_path / "my-sft"
    (out / "sft" / "ckpt").mkdir(parents=True)
    cfg = load_config(str(recipe), {"out_dir": str(out)})
    assert discard_stale_run(cfg, Reporter()) is False
    assert (out / "sft" / "ckpt").is_dir() and not (out / "demo_key.json").exists()
