"""2 training processes (torchrun, gloo on the CPU) against 1, and a run whose rank 1 is killed (issue 27).

Runs `duet train sft` on the demo recipe's tiny model, the same recipe three ways: 1 process; `--gpus 2`;
`--gpus 2` with rank 1 SIGKILLed at step STEPS/2 + 1 (DUET_TRAIN_FAULT; torchrun restarts both ranks, which
resume from the last checkpoint). Records each run's wall time and the max |Δ| of every weight against the
1-process run, in bench/results/train_distributed.json::

    .venv/bin/python bench/train_distributed.py [--steps 8] [--batch 4] [--work /tmp/dtrain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, machine_info, write_results
from safetensors.torch import load_file


def run(out: Path, sets: list[str], gpus: int, env: dict[str, str]) -> tuple[float, list[dict]]:
    args = [sys.executable, "-m", "app.trainer.cli", "sft", "models/recipes/demo.toml", "--set", f'out_dir="{out}"']
    for s in sets:
        args += ["--set", s]
    if gpus > 1:
        args += ["--gpus", str(gpus)]
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env})
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{args} failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return wall, [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]


def max_delta(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "sft/final/model.safetensors")), load_file(str(b / "sft/final/model.safetensors"))
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--work", default="/tmp/dtrain")
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    sets = [f"sft.steps={a.steps}", f"sft.batch={a.batch}", "sft.warmup=2", f"sft.ckpt_every={max(1, a.steps // 2)}",
            "data.train_synthetic.per_family=4", 'data.train_synthetic.families=["appear","colour"]',
            "data.heldout_synthetic=false"]
    kill_at = a.steps // 2 + 1
    runs = {}
    for name, gpus, env in (("1 process", 1, {}), ("2 processes", 2, {}),
                            ("2 processes, rank 1 killed", 2, {"DUET_TRAIN_FAULT": f"kill:1:sft:{kill_at}"})):
        out = work / name.replace(" ", "_").replace(",", "")
        wall, ev = run(out, sets, gpus, env)
        runs[name] = {"out": out, "wall_s": round(wall, 1), "resumed_from": next(
            (e["step"] for e in ev if e["event"] == "resume"), None),
            "losses": [e["loss"] for e in ev if e["event"] == "step"]}
        print(f"{name}: {wall:.1f} s", flush=True)
    base = runs["1 process"]["out"]
    for r in runs.values():
        r["max_abs_delta_vs_1"] = max_delta(base, r.pop("out"))
        print(r, flush=True)
    write_results("train_distributed", {"machine": machine_info(), "steps": a.steps, "global_batch": a.batch,
                                        "killed_at_step": kill_at, "backend": "gloo (CPU)", "runs": runs})


if __name__ == "__main__":
    main()
