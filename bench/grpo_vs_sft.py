"""Does GRPO after SFT raise held-out PAUC over SFT alone? Several GRPO seeds from one SFT model.

Every run starts from the same SFT checkpoint, the demo's (1000 steps of ``models/recipes/demo.toml``)
copied once to ``.cache/train/grpo-exp/sft`` (delete it to take a newer one), and runs
``app.trainer.grpo.run_grpo`` unchanged with the demo recipe plus ``--set`` overrides; only ``seed`` differs between runs (which clips each step
draws, and every rollout's sampling seed). Held-out PAUC (ω = 0.5, greedy decoding, the eval
definition) is measured at step 0 (= SFT alone; greedy, so the same for every seed) and every
``grpo.eval_every`` steps. The held-out set is the recipe's synthetic families with
``--heldout-per-family`` clips each (larger than the recipe's 8 so one flipped reply moves PAUC less).

    nice .venv/bin/python bench/grpo_vs_sft.py --name lr3e-4 --seeds 0,1,2 \\
        --set grpo.lr=3e-4 --set grpo.steps=40 --set grpo.eval_every=10

Writes ``bench/results/grpo_vs_sft_<name>.json`` (curves per seed, mean and spread) and prints a table.
Runs live in ``.cache/train/grpo-exp/<name>-s<seed>`` and are deleted first unless ``--keep``.

The training reward of a step depends on which clips the step drew, and that is the same for every
run with the same seed. A control run with the learning rate at its floor (``--set grpo.lr=1e-12``:
the SFT policy, same clips, same sampling seeds) removes that: ``--compare NAME --control CONTROL``
prints, per quarter of the run, the mean paired difference of the step reward (learning − control)
with its standard error, read from the two results files (nothing is trained).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, print_table, write_results  # noqa: E402

EXP = REPO / ".cache" / "train" / "grpo-exp"
DEMO_SFT = REPO / ".cache" / "train" / "demo" / "sft"


def one_run(name: str, seed: int, overrides: dict, per_family: int, keep: bool) -> dict:
    from app.trainer.config import load_config
    from app.trainer.grpo import run_grpo
    from app.trainer.jobs import Reporter

    out = EXP / f"{name}-s{seed}"
    if out.exists() and not keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (EXP / "data").mkdir(parents=True, exist_ok=True)
    for link, target in (("sft", EXP / "sft"), ("data", EXP / "data")):
        if not (out / link).exists():
            (out / link).symlink_to(target)
    cfg = load_config(REPO / "models" / "recipes" / "demo.toml",
                      {**overrides, "out_dir": str(out), "seed": seed,
                       "data.heldout_synthetic.per_family": per_family})
    t0 = time.perf_counter()
    run_grpo(cfg, Reporter(log_path=out / "progress.jsonl"))
    wall = time.perf_counter() - t0
    s = json.loads((out / "grpo" / "summary.json").read_text())
    shutil.rmtree(out / "grpo" / "ckpt", ignore_errors=True)  # keep the summary and final model only
    return {"seed": seed, "wall_s": wall,
            "evals": [{k: e[k] for k in ("step", "pauc", "pauc_w0", "pauc_w1", "replies", "out_of_span_replies")}
                      for e in s["evals"]],
            "rewards": [{k: r[k] for k in ("step", "reward", "pauc", "rep", "in_span", "pfx", "replies_per_rollout",
                                           "trained_rollouts")} for r in s["rewards"]]}


def compare(name: str, control: str) -> int:
    from bench._common import RESULTS

    a, c = (json.loads((RESULTS / f"grpo_vs_sft_{n}.json").read_text()) for n in (name, control))
    seeds = sorted({r["seed"] for r in a["runs"]} & {r["seed"] for r in c["runs"]})
    if not seeds:
        raise SystemExit(f"{name} and {control} share no seed")
    by_seed = {n: {r["seed"]: {x["step"]: x["reward"] for x in r["rewards"]} for r in d["runs"]}
               for n, d in (("a", a), ("c", c))}
    steps = sorted(set.intersection(*(set(by_seed[n][s]) for n in "ac" for s in seeds)))
    q = max(1, len(steps) // 4)
    rows, out = [], []
    for i in range(0, len(steps), q):
        diffs = [by_seed["a"][s][t] - by_seed["c"][s][t] for s in seeds for t in steps[i:i + q]]
        m = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        out.append({"steps": [steps[i], steps[min(i + q, len(steps)) - 1]], "mean_diff": m, "se": se, "n": len(diffs)})
        rows.append([f"{steps[i]}-{steps[min(i + q, len(steps)) - 1]}", f"{m:+.3f}", f"{se:.3f}", len(diffs)])
    print_table(f"step reward, {name} minus {control} (same seeds {seeds}: same clips, same sampling seeds)",
                ["steps", "mean difference", "standard error", "pairs"], rows)
    write_results(f"grpo_vs_sft_{name}_vs_{control}", {"name": name, "control": control, "seeds": seeds,
                                                         "quarters": out})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name")
    ap.add_argument("--compare", help="a results name to compare with --control (reads results, trains nothing)")
    ap.add_argument("--control", help="the results name of a run at grpo.lr=1e-12 with the same seeds")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], help="recipe override KEY=VALUE (as `duet train --set`)")
    ap.add_argument("--heldout-per-family", type=int, default=24)
    ap.add_argument("--keep", action="store_true", help="resume runs left by an earlier call instead of restarting")
    args = ap.parse_args()
    if args.compare or args.control:
        if not (args.compare and args.control):
            raise SystemExit("--compare and --control go together")
        return compare(args.compare, args.control)
    if not args.name:
        raise SystemExit("--name is required (or --compare NAME --control NAME)")
    if not (EXP / "sft" / "final" / "config.json").is_file():
        if not (DEMO_SFT / "final" / "config.json").is_file():
            raise SystemExit(f"no SFT model at {DEMO_SFT / 'final'}: run `duet train demo` (or the trainer tests) first")
        # a snapshot: the test suite retrains the demo (deleting its sft/) whenever the training code changes
        shutil.copytree(DEMO_SFT / "final", EXP / "sft" / "final")
        shutil.copy2(DEMO_SFT / "summary.json", EXP / "sft" / "summary.json")

    from app.trainer.cli import _overrides

    overrides = _overrides(args.set)
    load0 = os.getloadavg()
    runs = []
    for seed in (int(x) for x in args.seeds.split(",")):
        r = one_run(args.name, seed, overrides, args.heldout_per_family, args.keep)
        runs.append(r)
        print(f"seed {seed}: " + ", ".join(f"step {e['step']} PAUC {e['pauc']:.4f}" for e in r["evals"])
              + f" ({r['wall_s']:.0f} s)", flush=True)
    steps = [e["step"] for e in runs[0]["evals"]]
    rows, curve = [], []
    for k, step in enumerate(steps):
        vals = [r["evals"][k]["pauc"] for r in runs]
        m, sd = statistics.fmean(vals), statistics.pstdev(vals)
        curve.append({"step": step, "mean": m, "sd": sd, "min": min(vals), "max": max(vals), "per_seed": vals})
        rows.append([step, *(f"{x:.4f}" for x in (m, sd, min(vals), max(vals))), " ".join(f"{v:.4f}" for v in vals)])
    print_table(f"held-out PAUC (ω=0.5) by GRPO step, {len(runs)} seeds, {args.name}",
                ["step", "mean", "sd", "min", "max", "per seed"], rows)
    n_rw = len(runs[0]["rewards"])
    rw = [statistics.fmean(r["rewards"][i]["reward"] for r in runs) for i in range(n_rw)]
    q = max(1, n_rw // 4)
    print("mean reward per step (over seeds), by quarter:",
          [round(statistics.fmean(rw[i:i + q]), 3) for i in range(0, n_rw, q)])
    base, final = curve[0], curve[-1]
    print(f"SFT alone {base['mean']:.4f}; after {steps[-1]} GRPO steps {final['mean']:.4f} ± {final['sd']:.4f} "
          f"(Δ {final['mean'] - base['mean']:+.4f}); load average {load0} → {os.getloadavg()}")
    write_results(f"grpo_vs_sft_{args.name}", {"overrides": args.set, "heldout_per_family": args.heldout_per_family,
                                               "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                                               "curve": curve, "mean_reward_per_step": rw, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
