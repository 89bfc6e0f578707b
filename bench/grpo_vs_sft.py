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

A starting point that leaves timing to learn (issue 25): ``--sft-late-s D`` trains the SFT stage
once (``--sft-steps``, default the recipe's) on the recipe's training clips with every answer's spans
moved D seconds later, so SFT teaches replies D seconds (D / 2 turns) after the event; GRPO then trains
on the same clips with their true spans (the PAUC reward), and held-out PAUC is scored on true spans.
``--sft-steps N`` alone trains a shorter SFT on the true spans. These SFT models live in
``.cache/train/grpo-exp/sft-late<D>-<N>`` and are reused by later calls (delete one to retrain it).
``--breakdown NAME`` then says how a run's held-out PAUC moved: per gold answer right, silent or wrong.

    nice .venv/bin/python bench/grpo_vs_sft.py --name late2 --sft-late-s 2 --seeds 0,1,2 \\
        --set grpo.lr=3e-4 --set grpo.steps=40 --set grpo.eval_every=10
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
RECIPE = REPO / "models" / "recipes" / "demo.toml"


def late_dataset(cfg, delay: float, work: Path) -> Path:
    """The recipe's synthetic training set with every answer's reply and related spans ``delay`` s later.

    Spans are clipped to the video; an answer whose span would start after the video's end keeps its
    last second (so it lands on the last turn, late, instead of being dropped from training).
    """
    from dataclasses import replace

    from app.eval.dataset import write_dataset
    from app.trainer.data import load_examples, synthetic_dataset

    exs = load_examples(synthetic_dataset(cfg.data.train_synthetic, work))

    def shift(span, dur):
        if span is None:
            return None
        a, b = span
        return (min(a + delay, dur - 1.0), min(b + delay, dur))

    late = [replace(ex, video=str(ex.video_path), answers=[
        replace(a, reply_span=shift(a.reply_span, ex.duration), related_span=shift(a.related_span, ex.duration))
        for a in ex.answers]) for ex in exs]
    return write_dataset(late, work / f"late{delay:g}" / "dataset.jsonl")


def ensure_sft(late_s: float, steps: int | None, overrides: dict) -> tuple[Path, dict]:
    """The SFT model the GRPO runs start from: the demo's (copied once), or one trained here."""
    if not late_s and steps is None:
        if not (EXP / "sft" / "final" / "config.json").is_file():
            if not (DEMO_SFT / "final" / "config.json").is_file():
                raise SystemExit(f"no SFT model at {DEMO_SFT / 'final'}: run `duet train demo` (or the trainer tests) "
                                 "first")
            # a snapshot: the test suite retrains the demo (deleting its sft/) whenever the training code changes
            shutil.copytree(DEMO_SFT / "final", EXP / "sft" / "final")
            shutil.copy2(DEMO_SFT / "summary.json", EXP / "sft" / "summary.json")
        return EXP / "sft", {"from": "the demo's SFT (demo.toml)"}
    from app.trainer.config import load_config
    from app.trainer.jobs import Reporter
    from app.trainer.sft import run_sft

    cfg = load_config(RECIPE, {k: v for k, v in overrides.items() if not k.startswith("grpo.")})
    steps = steps or cfg.sft.steps
    tag = f"sft-late{late_s:g}-{steps}"
    home = EXP / tag
    info = {"from": tag, "late_s": late_s, "steps": steps}
    if (home / "sft" / "final" / "config.json").is_file():
        return home / "sft", info
    (EXP / "data").mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "data").exists():
        (home / "data").symlink_to(EXP / "data")
    cfg.out_dir, cfg.sft.steps = str(home), steps
    cfg.sft.ckpt_every = max(cfg.sft.ckpt_every, steps)  # one checkpoint: the final one
    if late_s:
        cfg.data.train_files = [str(late_dataset(cfg, late_s, EXP / "data"))]
        cfg.data.train_synthetic = None
    t0 = time.perf_counter()
    print(f"training {tag} (once) ...", flush=True)
    run_sft(cfg, Reporter(log_path=home / "progress.jsonl"))
    print(f"{tag}: {time.perf_counter() - t0:.0f} s", flush=True)
    shutil.rmtree(home / "sft" / "ckpt", ignore_errors=True)
    return home / "sft", info


def one_run(name: str, seed: int, overrides: dict, per_family: int, keep: bool, sft: Path) -> dict:
    from app.trainer.config import load_config
    from app.trainer.grpo import run_grpo
    from app.trainer.jobs import Reporter

    out = EXP / f"{name}-s{seed}"
    if out.exists() and not keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (EXP / "data").mkdir(parents=True, exist_ok=True)
    for link, target in (("sft", sft), ("data", EXP / "data")):
        if not (out / link).exists():
            (out / link).symlink_to(target)
    cfg = load_config(RECIPE,
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


def breakdown(name: str, per_family: int) -> int:
    """Per gold answer of the held-out set, for the SFT start and each seed's final model of run NAME: right (its
    PAUC above the silent 0.25), silent (= 0.25) or wrong (below: an in-span reply judged wrong), and the replies.
    Greedy, as the evaluations of the run; reads the models the run left, trains nothing."""
    from dataclasses import replace

    import torch

    from app.eval.dataset import Dataset
    from app.eval.scoring import score_dataset
    from app.trainer.config import load_config
    from app.trainer.data import load_examples, read_turn_frames, synthetic_dataset
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.rollout import greedy_predictions
    from app.trainer.sft import make_judge
    from bench._common import RESULTS

    res = json.loads((RESULTS / f"grpo_vs_sft_{name}.json").read_text())
    torch.set_num_threads(1)
    cfg = load_config(RECIPE, {"data.heldout_synthetic.per_family": per_family})
    held = Dataset([replace(e, id=f"heldout/{e.id}")
                    for e in load_examples(synthetic_dataset(cfg.data.heldout_synthetic, EXP / "data"))])
    d = cfg.data
    frames = {e.id: read_turn_frames(e.video_path, d.interval, d.frames_per_turn, d.tokens_per_frame) for e in held}
    judge = make_judge(cfg.grpo.judge)
    tag = res.get("sft", {}).get("late_s") is not None and res["sft"]["from"]  # trained by ensure_sft, or the demo's
    sft = EXP / tag / "sft" if tag else EXP / "sft"
    models = {"sft": sft / "final", **{f"seed {r['seed']}": EXP / f"{name}-s{r['seed']}" / "grpo" / "final"
                                       for r in res["runs"]}}
    rows, out = [], {}
    for label, path in models.items():
        enc = Encoder(path)
        preds = greedy_predictions(enc=enc, model=load_policy(path), dataset=held, frames=frames)
        sc = score_dataset(held, preds, judge)
        ps = [t.pauc[0.5] for t in sc.turns]
        right = [x for x in ps if x > 0.25 + 1e-9]
        wrong = sum(x < 0.25 - 1e-9 for x in ps)
        rec = {"pauc": sc.summary.pauc[0.5], "replies": sum(len(v.replies) for v in preds.values()),
               "out_of_span": sc.summary.out_of_span_replies, "right": len(right),
               "right_mean_pauc": statistics.fmean(right) if right else None, "silent": len(ps) - len(right) - wrong,
               "wrong": wrong}
        out[label] = rec
        rows.append([label, f"{rec['pauc']:.4f}", rec["replies"], rec["out_of_span"], rec["right"],
                     f"{rec['right_mean_pauc'] or 0:.3f}", rec["silent"], rec["wrong"]])
    print_table(f"held-out gold answers, {name}", ["model", "PAUC", "replies", "out of span", "right",
                                                   "mean PAUC of right", "silent", "wrong"], rows)
    write_results(f"grpo_vs_sft_{name}_breakdown", {"name": name, "heldout_per_family": per_family, "models": out})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name")
    ap.add_argument("--compare", help="a results name to compare with --control (reads results, trains nothing)")
    ap.add_argument("--control", help="the results name of a run at grpo.lr=1e-12 with the same seeds")
    ap.add_argument("--breakdown", metavar="NAME", help="right / silent / wrong held-out answers of the SFT start and "
                    "of each seed's final model of run NAME (reads its models, trains nothing)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], help="recipe override KEY=VALUE (as `duet train --set`)")
    ap.add_argument("--heldout-per-family", type=int, default=24)
    ap.add_argument("--keep", action="store_true", help="resume runs left by an earlier call instead of restarting")
    ap.add_argument("--sft-late-s", type=float, default=0.0,
                    help="start from an SFT trained with every answer labelled this many seconds late (trained once)")
    ap.add_argument("--sft-steps", type=int, help="start from an SFT of this many steps (trained once)")
    args = ap.parse_args()
    if args.breakdown:
        return breakdown(args.breakdown, args.heldout_per_family)
    if args.compare or args.control:
        if not (args.compare and args.control):
            raise SystemExit("--compare and --control go together")
        return compare(args.compare, args.control)
    if not args.name:
        raise SystemExit("--name is required (or --compare NAME --control NAME)")
    from app.trainer.cli_worker import parse_overrides as _overrides

    overrides = _overrides(args.set)
    load0 = os.getloadavg()
    sft, sft_info = ensure_sft(args.sft_late_s, args.sft_steps, overrides)
    runs = []
    for seed in (int(x) for x in args.seeds.split(",")):
        r = one_run(args.name, seed, overrides, args.heldout_per_family, args.keep, sft)
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
    write_results(f"grpo_vs_sft_{args.name}", {"overrides": args.set, "sft": sft_info, "heldout_per_family": args.heldout_per_family,
                                               "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                                               "curve": curve, "mean_reward_per_step": rw, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
