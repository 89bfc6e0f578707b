"""The loop SFT and GRPO share (app/trainer/loop.py), driven by a stage of the test's own on the real tiny model:
its cadence of evaluations and checkpoints, a cancel that leaves a checkpoint, a resume that ends where an
uninterrupted run ends, a checkpoint of another recipe refused, and a recipe hash that old checkpoints still match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from app.trainer.config import DEFAULT_DEMO_RECIPE, load_config
from app.trainer.jobs import Cancelled, JobError, Reporter, StopFlag
from app.trainer.loop import Policy, open_job, recipe_hash, train
from app.trainer.modeling import base_checkpoint, load_policy

SETS = {"sft.steps": 5, "sft.ckpt_every": 2, "sft.eval_every": 2}


def _run(out: Path, cancel_at: int = 0, **sets: Any) -> tuple[list[dict[str, Any]], Path | None]:
    """A stage whose step pulls the weights towards zero (a real AdamW step on the tiny model); its events and
    final folder (None when it was cancelled). With ``cancel_at``, the cancel file appears during that step."""
    cfg = load_config(DEFAULT_DEMO_RECIPE, {**SETS, "out_dir": str(out), **sets})
    reporter = Reporter()
    job = open_job(cfg, "sft", "losses", "batch", reporter, StopFlag(out / "CANCEL"))
    base = base_checkpoint(cfg)
    model = load_policy(base, freeze_vision=False)
    opt_state = job.resume(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    policy = Policy(model, opt, base)
    job.resume_optimizer(policy, opt_state)

    def step_fn(step: int) -> tuple[float, dict[str, Any]]:
        loss = sum((p.float() ** 2).mean() for p in params) * step
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == cancel_at:
            (out / "CANCEL").touch()
        value = float(loss.detach())
        return round(value, 6), {"loss": round(value, 5)}

    def evaluate(whole: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {"pauc": round(float(sum(p.abs().sum() for p in whole.parameters())), 3), "replies": 0}

    try:
        final = train(job, policy, step_fn, evaluate, lambda st: {"loss_last": st["losses"][-1:]})
    except Cancelled:
        final = None
    (out / "CANCEL").unlink(missing_ok=True)
    return reporter.events, final


def _where(events: list[dict[str, Any]], name: str) -> list[int]:
    return [e["step"] for e in events if e["event"] == name]


def test_a_cancelled_stage_resumes_to_the_end_of_an_uninterrupted_one(tmp_path: Path) -> None:
    full_events, full = _run(tmp_path / "full")
    assert full is not None and (full / "config.json").is_file()
    assert _where(full_events, "step") == [1, 2, 3, 4, 5]
    assert _where(full_events, "eval") == [0, 2, 4, 5]  # at the start, every eval_every steps, and at the end
    assert _where(full_events, "checkpoint") == [2, 4, 5]
    assert all(e["stage"] == "sft" and e["steps"] == 5 and "eta_s" in e for e in full_events if e["event"] == "step")
    done = full_events[-1]
    assert done["event"] == "done" and done["path"] == str(full) and [e["step"] for e in done["evals"]] == [0, 2, 4, 5]
    summary = json.loads((tmp_path / "full" / "sft" / "summary.json").read_text())
    assert summary["step"] == 5 and len(summary["losses"]) == 5 and summary["recipe"] == recipe_hash(
        load_config(DEFAULT_DEMO_RECIPE, SETS), "sft")

    cut = tmp_path / "cut"
    cut_events, final = _run(cut, cancel_at=3)
    assert final is None and not (cut / "sft" / "final").exists()
    assert _where(cut_events, "checkpoint") == [2, 3]  # on cancel too, so nothing trained is lost
    resumed_events, resumed = _run(cut)
    assert [(e["event"], e["step"]) for e in resumed_events if e["event"] == "resume"] == [("resume", 3)]
    assert _where(resumed_events, "step") == [4, 5] and _where(resumed_events, "eval") == [4, 5]
    assert resumed is not None
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "sft" / "summary.json").read_text()) == summary


def test_a_checkpoint_of_another_recipe_is_refused(tmp_path: Path) -> None:
    _run(tmp_path, cancel_at=1)
    with pytest.raises(JobError, match="different recipe") as e:
        _run(tmp_path, **{"sft.lr": 1e-4})
    assert e.value.kind == "config" and e.value.code == 2 and str(tmp_path / "sft") in e.value.advice


def test_the_recipe_hash_is_the_one_checkpoints_were_made_with(tmp_path: Path) -> None:
    """Pinned: a change of these values orphans every checkpoint and the cached demo model (steps and cadences
    are left out, so a longer run resumes a shorter one)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text("seed = 3\n[sft]\nsteps = 7\nlr = 1e-3\n[grpo]\ngroup = 2\n")
    cfg = load_config(recipe)
    assert (recipe_hash(cfg, "sft"), recipe_hash(cfg, "grpo")) == ("3a7055b009ee9f43", "a216fcddf23ddb2e")
    longer = load_config(recipe, {"sft.steps": 70, "sft.ckpt_every": 5, "sft.eval_every": 5, "sft.eval_limit": 3})
    assert recipe_hash(longer, "sft") == recipe_hash(cfg, "sft")
    assert recipe_hash(load_config(recipe, {"sft.lr": 2e-3}), "sft") != recipe_hash(cfg, "sft")
