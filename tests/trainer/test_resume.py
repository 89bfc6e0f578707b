"""A killed SFT job resumes from its checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SETS = ["sft.steps=6", "sft.ckpt_every=2", "sft.batch=2", "sft.warmup=2",
        "data.train_synthetic.per_family=1", 'data.train_synthetic.families=["appear","count"]',
        "data.heldout_synthetic=false", "data.nqna_fraction=0.5"]


def _cmd(out: Path) -> list[str]:
    args = [sys.executable, "-m", "app.trainer.cli", "sft", "models/recipes/demo.toml", "--set", f'out_dir="{out}"']
    for s in SETS:
        args += ["--set", s]
    return args


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_killed_job_resumes_to_the_same_weights(tmp_path):
    full = tmp_path / "full"
    r = subprocess.run(_cmd(full), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    events = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 6 and all(e.get("eta_s") is not None for e in events if e["event"] == "step")

    killed = tmp_path / "killed"
    p = subprocess.Popen(_cmd(killed), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if '"event": "checkpoint"' in line and json.loads(line)["step"] < 6:
            os.kill(p.pid, signal.SIGKILL)  # no chance to clean up: the checkpoint on disk must suffice
            break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (killed / "sft" / "final").exists()

    r2 = subprocess.run(_cmd(killed), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-2000:]
    ev2 = [json.loads(x) for x in r2.stdout.splitlines() if x.startswith("{")]
    assert any(e["event"] == "resume" for e in ev2)
    a = load_file(str(full / "sft" / "final" / "model.safetensors"))
    b = load_file(str(killed / "sft" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    resumed_losses = [e["loss"] for e in ev2 if e["event"] == "step"]
    assert resumed_losses == losses[-len(resumed_losses):]


def test_bad_recipe_exits_2_with_a_named_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\ntokens_per_frame = 2\n")
    r = subprocess.run([sys.executable, "-m", "app.trainer.cli", "sft", str(bad)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["event"] == "error" and ev["kind"] == "config" and "tokens_per_frame" in ev["message"]
