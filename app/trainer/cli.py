"""``duet train sft|grpo|export|demo RECIPE``: each action is a process that speaks JSON lines.

Usage::

    duet train sft models/recipes/demo.toml [--set sft.steps=50] [--quiet]
    duet train grpo RECIPE
    duet train export RECIPE [--no-parity]
    duet train demo [RECIPE] [--if-missing]     SFT → GRPO → export, registered as "demo" (source "demo")
    duet train runtime install|status|remove    the private PyTorch environment of the installed app

Without PyTorch in this interpreter (the installed app ships none), a job runs in the private runtime
that ``duet train runtime install`` makes (app/trainer/runtime.py).

A killed or cancelled job (SIGTERM, Ctrl-C, or a file named CANCEL in the recipe's out_dir) resumes
from its last checkpoint when the same command is run again. With several CUDA GPUs the job
re-launches itself under ``accelerate launch`` (one process per GPU, data sharded by rank).
Exit status: 0 done, 2 bad input (recipe, data, missing stage), 3 out of memory (with advice),
130 cancelled, 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ACTIONS = ("sft", "grpo", "export", "demo", "runtime")
DEFAULT_DEMO_RECIPE = Path(__file__).resolve().parents[2] / "models" / "recipes" / "demo.toml"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``duet`` command's sub-parsers."""
    p = subparsers.add_parser("train", help="fine-tune MMDuet2: SFT, multi-turn GRPO, export to GGUF",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("recipe", nargs="?", help="TOML recipe (default for demo: models/recipes/demo.toml); "
                   "for runtime: install, status or remove")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set sft.steps=20 (value parsed as TOML)")
    p.add_argument("--quiet", action="store_true", help="no JSON lines on stdout (still in progress.jsonl)")
    p.add_argument("--no-parity", action="store_true", help="export: skip the engine-vs-trainer check")
    p.add_argument("--if-missing", action="store_true", help="demo: do nothing if the demo model is registered")
    p.add_argument("--json", action="store_true", help="runtime: progress and status as JSON lines")
    p.set_defaults(func=cmd_train)


def _overrides(items: list[str]) -> dict[str, Any]:
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def _maybe_multi_gpu() -> None:
    """Re-exec under ``accelerate launch`` when several GPUs are visible and we are not already a rank."""
    if "LOCAL_RANK" in os.environ or os.environ.get("DUET_NO_ACCELERATE"):
        return
    try:
        import torch
    except ImportError:
        return
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > 1:
        os.execvp(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n),
                                   "-m", "app.trainer.cli", *sys.argv[sys.argv.index("train") + 1:]])


def run_action(action: str, recipe: str | None, overrides: dict[str, Any], *, quiet: bool = False,
               parity: bool = True, if_missing: bool = False, stream: Any = None,
               library_root: Path | None = None) -> int:
    from app.trainer.config import ConfigError, load_config
    from app.trainer.jobs import EXIT_BAD_INPUT, Reporter, StopFlag, run_guarded

    stream = stream if stream is not None else sys.stdout
    path = recipe or (str(DEFAULT_DEMO_RECIPE) if action == "demo" else None)
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
    reporter = Reporter(stream, cfg.out / "progress.jsonl", quiet=quiet)
    cancel = cfg.out / "CANCEL"
    cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        if action == "sft":
            from app.trainer.sft import run_sft

            return run_guarded(lambda: run_sft(cfg, reporter, stop), reporter, "sft")
        if action == "grpo":
            from app.trainer.grpo import run_grpo

            return run_guarded(lambda: run_grpo(cfg, reporter, stop), reporter, "grpo")
        if action == "export":
            from app.trainer.export import run_export

            return run_guarded(lambda: run_export(cfg, reporter, parity=parity, library_root=library_root),
                               reporter, "export")
        from app.trainer.demo import run_demo

        return run_guarded(lambda: run_demo(cfg, reporter, stop, if_missing=if_missing, library_root=library_root),
                           reporter, "demo")
    finally:
        stop.restore()


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
    argv = [args.action, *([args.recipe] if args.recipe else [])]
    argv += [f"--set={item}" for item in args.set]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--no-parity", args.no_parity),
                                   ("--if-missing", args.if_missing)) if on]
    cmd, env = rt.job_command(argv)
    return subprocess.call(cmd, env=env)


def cmd_train(args: argparse.Namespace) -> int:
    if args.action == "runtime":
        from app.trainer.runtime import cmd_runtime

        return cmd_runtime(args.recipe, as_json=args.json)
    from app.trainer.runtime import torch_importable

    if not torch_importable():
        return _in_runtime(args)
    if args.action != "export":
        _maybe_multi_gpu()
    return run_action(args.action, args.recipe, _overrides(args.set), quiet=args.quiet, parity=not args.no_parity,
                      if_missing=args.if_missing)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.trainer.cli ACTION RECIPE``: what ``duet train`` runs (and accelerate re-launches)."""
    parser = argparse.ArgumentParser(prog="duet")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        argv = ["train", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
