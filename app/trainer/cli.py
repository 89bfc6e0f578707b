"""``duet train sft|grpo|export|demo RECIPE``: each action is a process that speaks JSON lines.

Usage::

    duet train sft models/recipes/demo.toml [--set sft.steps=50] [--quiet]
    duet train grpo RECIPE
    duet train export RECIPE [--no-parity]
    duet train demo [RECIPE] [--if-missing] [--with-grpo]
                                                SFT → export, registered as "demo" (source "demo"); --with-grpo
                                                adds the recipe's GRPO stage (no gain on the demo: the recipe says)
    duet train feedback --base demo --name mine [--sessions ID,ID | --all] [--steps 40] [--replay DATA.jsonl]
                                                your marked sessions → SFT with replay → GGUF → library "mine"
    duet train runtime install|status|remove    the private PyTorch environment of the installed app

Without PyTorch in this interpreter (the installed app ships none), a job runs in the private runtime
that ``duet train runtime install`` makes (app/trainer/runtime.py).

    duet train sft|grpo|feedback … --gpus N  N processes through torchrun, one per GPU (on a machine
                                                without CUDA, N CPU processes with gloo); the same global batch;
                                                feedback: every process trains each round, the first one
                                                checks the corrections on the engine between rounds
    duet train export-config RECIPE --engine verl|trl --out DIR
                                                the recipe, the PAUC reward and the data for a cluster trainer

A killed or cancelled job (SIGTERM, Ctrl-C, or a file named CANCEL in the job's out_dir) resumes
from its last checkpoint when the same command is run again, with any --gpus. With --gpus N,
torchrun restarts the N processes (--max-restarts times, default 1) when one dies, and they resume.
Exit status: 0 done, 2 bad input (recipe, data, missing stage), 3 out of memory (with advice),
130 cancelled, 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.trainer import cli_feedback
from app.trainer.cli_worker import parse_overrides, worker_context, worker_exit, worker_reporter
from app.trainer.config import DEFAULT_DEMO_RECIPE

ACTIONS = ("sft", "grpo", "export", "demo", "feedback", "runtime", "export-config")
# feedback too: every rank trains each round, rank 0 verifies on the engine between them (feedback_run.py)
MULTI_GPU_ACTIONS = ("sft", "grpo", "feedback")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``duet`` command's sub-parsers."""
    p = subparsers.add_parser("train", help="fine-tune MMDuet2: SFT, multi-turn GRPO, export to GGUF",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("recipe", nargs="?", help="TOML recipe (default for demo: models/recipes/demo.toml); "
                   "for runtime: install, status or remove")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set sft.steps=20 (value parsed as TOML); feedback: a key "
                        "of the recipe it builds, e.g. --set data.heldout_synthetic=false")
    p.add_argument("--quiet", action="store_true", help="no JSON lines on stdout (still in progress.jsonl)")
    p.add_argument("--no-parity", action="store_true", help="export: skip the engine-vs-trainer check")
    p.add_argument("--if-missing", action="store_true", help="demo: do nothing if the demo model is registered")
    p.add_argument("--with-grpo", action="store_true",
                   help="demo: run the recipe's GRPO stage after SFT and export its model (off by default: it does "
                        "not raise the demo's held-out PAUC, docs/training-estimates.md)")
    p.add_argument("--json", action="store_true", help="runtime: progress and status as JSON lines")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="sft, grpo, feedback: train in N processes through torchrun, one per GPU (NCCL); without "
                        "CUDA, N CPU processes (gloo). The global batch stays the recipe's, so N must divide "
                        "sft.batch / grpo.clips_per_step (default 1: one process)")
    p.add_argument("--max-restarts", type=int, default=1, metavar="R",
                   help="with --gpus N: how many times torchrun restarts the processes after one dies; they "
                        "resume from the last checkpoint (default 1)")
    p.add_argument("--engine", choices=("verl", "trl"), help="export-config: which trainer's format")
    p.add_argument("--out", help="export-config: the folder to write (recipe, reward function, data)")
    cli_feedback.add_arguments(p)
    p.set_defaults(func=cmd_train)


def run_action(action: str, recipe: str | None, overrides: dict[str, Any], *, quiet: bool = False,
               parity: bool = True, if_missing: bool = False, with_grpo: bool = False, stream: Any = None,
               library_root: Path | None = None, engine: str | None = None, out_dir: str | None = None) -> int:
    from app.trainer.config import ConfigError, load_config
    from app.trainer.jobs import EXIT_BAD_INPUT, Reporter, StopFlag, run_guarded

    stream = stream if stream is not None else sys.stdout
    path = recipe or (str(DEFAULT_DEMO_RECIPE) if action in ("demo", "export-config") else None)
    if path is None:
        Reporter(stream).emit("error", stage=action, kind="config", message="a recipe file is required",
                              advice="e.g. duet train sft models/recipes/demo.toml")
        return EXIT_BAD_INPUT
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        Reporter(stream).emit("error", stage=action, kind="config", message=str(e), advice="fix the recipe")
        return EXIT_BAD_INPUT
    cfg.out.mkdir(parents=True, exist_ok=True)
    if action == "export-config":
        return _export_config(cfg, engine, out_dir, stream)
    ctx = worker_context(cfg.device)
    reporter = worker_reporter(ctx, stream, cfg.out, quiet)
    cancel = cfg.out / "CANCEL"
    if not ctx.enabled:  # with torchrun the launcher removed it: a restarted worker must still see a new one
        cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        if action == "sft":
            from app.trainer.sft import run_sft

            return worker_exit(ctx, cfg.out, run_guarded(lambda: run_sft(cfg, reporter, stop), reporter, "sft"))
        if action == "grpo":
            from app.trainer.grpo import run_grpo

            return worker_exit(ctx, cfg.out, run_guarded(lambda: run_grpo(cfg, reporter, stop), reporter, "grpo"))
        if action == "export":
            from app.trainer.export import run_export

            return run_guarded(lambda: run_export(cfg, reporter, parity=parity, library_root=library_root),
                               reporter, "export")
        from app.trainer.demo import run_demo

        return run_guarded(lambda: run_demo(cfg, reporter, stop, if_missing=if_missing, library_root=library_root,
                                            with_grpo=with_grpo),
                           reporter, "demo")
    finally:
        stop.restore()


def _export_config(cfg: Any, engine: str | None, out_dir: str | None, stream: Any) -> int:
    from app.trainer.jobs import EXIT_BAD_INPUT, Reporter, run_guarded

    reporter = Reporter(stream)
    if not engine or not out_dir:
        reporter.emit("error", stage="export-config", kind="config", message="--engine verl|trl and --out DIR are "
                      "required", advice="e.g. duet train export-config models/recipes/demo.toml --engine verl --out "
                      "verl-job")
        return EXIT_BAD_INPUT
    from app.trainer.export_config import export_config

    return run_guarded(lambda: export_config(cfg, engine, Path(out_dir), reporter), reporter, "export-config")


def _in_runtime(args: argparse.Namespace) -> int:
    """Run this job in the private PyTorch runtime (this interpreter has no torch: the installed app)."""
    import subprocess

    from app.trainer.jobs import EXIT_BAD_INPUT, Reporter
    from app.trainer.runtime import TrainerRuntime

    rt = TrainerRuntime()
    st = rt.status()
    if not st.ready:
        Reporter(sys.stdout).emit("error", stage=args.action, kind="runtime",
                                  message=f"training needs PyTorch, which this app installs on first use ({st.state})",
                                  advice=st.describe())
        return EXIT_BAD_INPUT
    if "train" in sys.argv:  # the command as the user typed it (every action's flags, feedback's included)
        argv = sys.argv[sys.argv.index("train") + 1:]
    else:
        argv = [args.action, *([args.recipe] if args.recipe else [])]
        argv += [f"--set={item}" for item in args.set]
        argv += [flag for flag, on in (("--quiet", args.quiet), ("--no-parity", args.no_parity),
                                       ("--if-missing", args.if_missing), ("--with-grpo", args.with_grpo)) if on]
    cmd, env = rt.job_command(argv)
    return subprocess.call(cmd, env=env)


def cmd_train(args: argparse.Namespace) -> int:
    if args.action == "runtime":
        from app.trainer.runtime import cmd_runtime

        return cmd_runtime(args.recipe, as_json=args.json)
    from app.trainer.runtime import torch_importable

    if not torch_importable():
        return _in_runtime(args)
    from app.trainer import distributed

    if args.gpus != 1 and not distributed.in_torchrun():
        return _launch(args)
    if args.action == "feedback":
        return cli_feedback.run_feedback_action(args)
    return run_action(args.action, args.recipe, parse_overrides(args.set), quiet=args.quiet, parity=not args.no_parity,
                      if_missing=args.if_missing, with_grpo=args.with_grpo, engine=args.engine, out_dir=args.out)


def _launch(args: argparse.Namespace) -> int:
    """``--gpus N``: check here what would fail in every worker alike, then run this command under torchrun."""
    from app.trainer import distributed
    from app.trainer.config import ConfigError, load_config
    from app.trainer.jobs import EXIT_BAD_INPUT, JobError, Reporter

    rep = Reporter(sys.stdout)

    def fail(message: str, advice: str) -> int:
        rep.emit("error", stage=args.action, kind="config", message=message, advice=advice)
        return EXIT_BAD_INPUT

    if args.action not in MULTI_GPU_ACTIONS:
        return fail(f"--gpus applies to {', '.join(MULTI_GPU_ACTIONS)}, not to {args.action}",
                    f"run `duet train {args.action}` without --gpus")
    if args.gpus < 1 or args.max_restarts < 0:
        return fail(f"--gpus {args.gpus} --max-restarts {args.max_restarts}: need --gpus ≥ 1 and --max-restarts ≥ 0",
                    "e.g. --gpus 2")
    devices = [d for d in distributed.available_devices() if d["kind"] == "cuda"]
    if devices and args.gpus > len(devices):
        return fail(f"--gpus {args.gpus}: this machine has {len(devices)} CUDA GPU(s)", f"use --gpus {len(devices)}")
    if args.action == "feedback":
        return cli_feedback.launch_feedback(args)
    if not args.recipe:
        return fail("a recipe file is required", f"e.g. duet train {args.action} models/recipes/demo.toml --gpus 2")
    try:
        cfg = load_config(args.recipe, parse_overrides(args.set))
    except ConfigError as e:
        return fail(str(e), "fix the recipe")
    try:
        ctx = distributed.DistContext(world=args.gpus)
        if args.action == "sft":
            ctx.check_divides("sft.batch", cfg.sft.batch)
        else:
            ctx.check_divides("grpo.clips_per_step", cfg.grpo.clips_per_step)
    except JobError as e:
        rep.emit("error", stage=args.action, kind=e.kind, message=str(e), advice=e.advice)
        return e.code
    argv = getattr(args, "argv", None) or sys.argv[sys.argv.index("train") + 1:]
    return distributed.launch(args.gpus, distributed.strip_gpus(argv), cfg.out, max_restarts=args.max_restarts)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.trainer.cli ACTION RECIPE``: what ``duet train`` runs (the Train page starts this)."""
    parser = argparse.ArgumentParser(prog="duet")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        argv = ["train", *argv]
    args = parser.parse_args(argv)
    args.argv = argv[1:]  # what torchrun's workers run again (--gpus stripped)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
