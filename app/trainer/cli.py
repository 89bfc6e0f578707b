"""``duet train sft|grpo|export|demo RECIPE``: each action is a process that speaks JSON lines.

Usage::

    duet train sft models/recipes/demo.toml [--set sft.steps=50] [--quiet]
    duet train grpo RECIPE
    duet train export RECIPE [--no-parity]
    duet train demo [RECIPE] [--if-missing]     SFT → GRPO → export, registered as "demo" (source "demo")
    duet train feedback --base demo --name mine [--sessions ID,ID | --all] [--steps 40] [--replay DATA.jsonl]
                                                your marked sessions → SFT with replay → GGUF → library "mine"
    duet train runtime install|status|remove    the private PyTorch environment of the installed app

Without PyTorch in this interpreter (the installed app ships none), a job runs in the private runtime
that ``duet train runtime install`` makes (app/trainer/runtime.py).

A killed or cancelled job (SIGTERM, Ctrl-C, or a file named CANCEL in the job's out_dir) resumes
from its last checkpoint when the same command is run again. Training uses one device (one GPU or
the CPU); several GPUs are not used together.
Exit status: 0 done, 2 bad input (recipe, data, missing stage), 3 out of memory (with advice),
130 cancelled, 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.trainer.config import DEFAULT_DEMO_RECIPE

ACTIONS = ("sft", "grpo", "export", "demo", "feedback", "runtime")


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
    f = p.add_argument_group("feedback (duet train feedback)")
    f.add_argument("--base", help="feedback: the model to start from: demo, a model made by this command, or an "
                                  "HF checkpoint folder")
    f.add_argument("--name", help="feedback: the new model's name in the library")
    f.add_argument("--sessions", help="feedback: comma-separated session ids (see `duet sessions list`)")
    f.add_argument("--all", action="store_true", help="feedback: every saved session that has feedback")
    f.add_argument("--steps", type=int, default=40, help="feedback: optimizer steps (default 40)")
    f.add_argument("--replay", action="append", default=[], metavar="DATASET",
                   help="feedback: a dataset file (Duet .jsonl or ProactiveVideoQA .json) mixed in against forgetting")
    f.add_argument("--synthetic", action="store_true", help="feedback: also train on the demo's synthetic videos")
    f.add_argument("--grpo-steps", type=int, default=0, help="feedback: GRPO steps after SFT (needs --replay or "
                                                             "--synthetic; default 0)")
    f.add_argument("--lr", type=float, help="feedback: learning rate (default 5e-4 full fine-tune, 1e-4 LoRA)")
    f.add_argument("--parity", action="store_true", help="feedback: also check the GGUF against the trained "
                                                         "weights on the held-out clips (slower)")
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


def run_feedback_action(args: argparse.Namespace, *, stream: Any = None, library_root: Path | None = None,
                        sessions_root: Path | None = None) -> int:
    """``duet train feedback``: resolve the sessions, build the recipe, train, export, register."""
    from app.core.errors import InputError
    from app.core.sessions import SessionStore, sessions_with_feedback
    from app.trainer.feedback_job import NAME_RE, build_recipe, run_feedback
    from app.trainer.jobs import EXIT_BAD_INPUT, JobError, Reporter, StopFlag, run_guarded

    stream = stream if stream is not None else sys.stdout
    store = SessionStore(sessions_root)

    def fail(message: str, advice: str) -> int:
        Reporter(stream).emit("error", stage="feedback", kind="config", message=message, advice=advice)
        return EXIT_BAD_INPUT

    if not args.base or not args.name:
        return fail("--base and --name are required", "e.g. duet train feedback --base demo --name mine --all")
    if not NAME_RE.match(args.name) or args.name in ("demo", "tiny"):  # it becomes a folder: checked first
        return fail(f"--name {args.name!r}: use 1–64 letters, digits, '.', '_' or '-', starting with a "
                    "letter or digit and not ending in '.' (not 'demo' or 'tiny')", "pick another name")
    if args.sessions and args.all:
        return fail("give either --sessions ID,… or --all, not both", "see `duet sessions list` for the ids")
    if not (args.sessions or args.all or args.replay or args.synthetic):
        return fail("nothing to train on: give --sessions ID,… or --all (or a dataset with --replay)",
                    "see `duet sessions list` for the ids")
    if args.all:
        dirs = [s.directory for s in sessions_with_feedback(store)]
    else:
        dirs = []
        for sid in [x.strip() for x in (args.sessions or "").split(",") if x.strip()]:
            try:
                dirs.append(store.find(sid))  # the id is checked before it becomes a path
            except (InputError, FileNotFoundError) as e:
                return fail(str(e), "see `duet sessions list` for the ids")
    try:
        cfg, raw = build_recipe(args.base, args.name, dirs, steps=args.steps, replay=args.replay, lr=args.lr,
                                synthetic=args.synthetic, grpo_steps=args.grpo_steps)
    except JobError as e:
        Reporter(stream).emit("error", stage="feedback", kind=e.kind, message=str(e), advice=e.advice)
        return e.code
    cfg.out.mkdir(parents=True, exist_ok=True)
    _record_job(cfg.out)
    reporter = Reporter(stream, cfg.out / "progress.jsonl", quiet=args.quiet)
    cancel = cfg.out / "CANCEL"
    cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        return run_guarded(lambda: run_feedback(cfg, raw, reporter, stop, parity=args.parity,
                                                library_root=library_root), reporter, "feedback")
    finally:
        stop.restore()


def _record_job(folder: Path) -> None:
    """``job.json`` (pid, the command to resume with), so the Train page finds a job started from a terminal."""
    import time

    from app.core.atomic import write_json_atomic

    if "feedback" not in sys.argv:
        return  # called in-process (tests): no command line to record
    head = [sys.executable, "train"] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app.trainer.cli"]
    argv = [*head, *sys.argv[sys.argv.index("feedback"):]]
    write_json_atomic(folder / "job.json", {"pid": os.getpid(), "argv": argv, "started": time.time()})


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
    if args.action == "feedback":
        return run_feedback_action(args)
    return run_action(args.action, args.recipe, _overrides(args.set), quiet=args.quiet, parity=not args.no_parity,
                      if_missing=args.if_missing)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.trainer.cli ACTION RECIPE``: what ``duet train`` runs (the Train page starts this)."""
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
