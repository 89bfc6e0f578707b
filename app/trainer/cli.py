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
import os
import sys
from pathlib import Path
from typing import Any

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
    f = p.add_argument_group("feedback (duet train feedback)")
    f.add_argument("--base", help="feedback: the model to start from: demo, a model made by this command, or an "
                                  "HF checkpoint folder")
    f.add_argument("--name", help="feedback: the new model's name in the library")
    f.add_argument("--sessions", help="feedback: comma-separated session ids (see `duet sessions list`)")
    f.add_argument("--all", action="store_true", help="feedback: every saved session that has feedback")
    f.add_argument("--steps", type=int, default=40, help="feedback: optimizer steps (default 40); with sessions, "
                   "steps per round: training goes on until the new model says every correction")
    f.add_argument("--max-steps", type=int, help="feedback: the most steps in all, rounds included (default 4 × "
                   "--steps); then it stops and says which corrections were not learned")
    f.add_argument("--max-minutes", type=float, default=0.0, help="feedback: start no round that would end after "
                   "this long (default 0: no time limit)")
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
    ctx = _worker_context(cfg.device)
    reporter = _reporter(ctx, stream, cfg.out, quiet)
    cancel = cfg.out / "CANCEL"
    if not ctx.enabled:  # with torchrun the launcher removed it: a restarted worker must still see a new one
        cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        if action == "sft":
            from app.trainer.sft import run_sft

            return _finish(ctx, cfg.out, run_guarded(lambda: run_sft(cfg, reporter, stop), reporter, "sft"))
        if action == "grpo":
            from app.trainer.grpo import run_grpo

            return _finish(ctx, cfg.out, run_guarded(lambda: run_grpo(cfg, reporter, stop), reporter, "grpo"))
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


def _worker_context(device: str) -> Any:
    """This process's place in a torchrun job (joining its process group), or a single process's context."""
    from app.trainer import distributed

    return distributed.init_from_env(device) if distributed.in_torchrun() else distributed.context()


def _finish(ctx: Any, out: Path, code: int) -> int:
    """A torchrun worker's exit status: the job's own code goes to the launcher through a file.

    torchrun restarts the whole group whenever a worker exits non-zero, which is right for a crash (the
    workers resume from the last checkpoint) and wrong for an outcome that a restart cannot change:
    done, cancelled, a bad recipe. Those exit 0, and rank 0 writes the real code for the launcher.
    """
    from app.trainer import distributed
    from app.trainer.jobs import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK

    if not ctx.enabled:
        return code
    if ctx.is_main:
        distributed.write_exit_code(out, code)
    distributed.shutdown()
    return 0 if code in (EXIT_OK, EXIT_BAD_INPUT, EXIT_CANCELLED) else code


def _reporter(ctx: Any, stream: Any, out: Path, quiet: bool) -> Any:
    """Rank 0 reports (stdout and progress.jsonl); the other ranks train silently (their errors go to stderr)."""
    from app.trainer.jobs import Reporter

    if ctx.is_main:
        return Reporter(stream, out / "progress.jsonl", quiet=quiet)
    return Reporter(None)


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


def _feedback_recipe(args: argparse.Namespace, stream: Any,
                     sessions_root: Path | None) -> tuple[Any, dict[str, Any]] | int:
    """``duet train feedback``'s arguments → (recipe, raw recipe dict), or the exit code of a clear refusal."""
    from app.core.errors import InputError
    from app.core.sessions import SessionStore, sessions_with_feedback
    from app.trainer.feedback_job import NAME_RE, build_recipe
    from app.trainer.jobs import EXIT_BAD_INPUT, JobError, Reporter

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
        return build_recipe(args.base, args.name, dirs, steps=args.steps, replay=args.replay, lr=args.lr,
                            synthetic=args.synthetic, grpo_steps=args.grpo_steps, max_steps=args.max_steps,
                            max_minutes=args.max_minutes, overrides=_overrides(args.set))
    except JobError as e:
        Reporter(stream).emit("error", stage="feedback", kind=e.kind, message=str(e), advice=e.advice)
        return e.code


def run_feedback_action(args: argparse.Namespace, *, stream: Any = None, library_root: Path | None = None,
                        sessions_root: Path | None = None) -> int:
    """``duet train feedback``: resolve the sessions, build the recipe, train, export, register.

    In a torchrun worker (``--gpus N``) every rank runs this: all of them train, rank 0 alone verifies, exports,
    registers and reports (app/trainer/feedback_run.py).
    """
    from app.trainer.feedback_job import run_feedback
    from app.trainer.jobs import StopFlag, run_guarded

    stream = stream if stream is not None else sys.stdout
    job = _feedback_recipe(args, stream, sessions_root)
    if isinstance(job, int):
        return job
    cfg, raw = job
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = _worker_context(cfg.device)
    if not ctx.enabled:
        _record_job(cfg.out)  # with torchrun, the launcher recorded itself
    reporter = _reporter(ctx, stream, cfg.out, args.quiet)
    cancel = cfg.out / "CANCEL"
    if not ctx.enabled:
        cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        code = _finish(ctx, cfg.out, run_guarded(lambda: run_feedback(cfg, raw, reporter, stop, parity=args.parity,
                                                                      library_root=library_root), reporter, "feedback"))
    finally:
        stop.restore()
    if args.quiet and ctx.is_main:  # no JSON lines on stdout: what the job did, in words (feedback_report.py)
        from app.trainer.feedback_report import describe

        print(describe(reporter.events), file=stream, flush=True)
    return code


def _launch_feedback(args: argparse.Namespace) -> int:
    """``duet train feedback --gpus N``: in this one process, refuse what every worker would, then launch.

    That is the arguments, the split of ``sft.batch`` (and ``grpo.clips_per_step``) over N, and "nothing to
    learn": the base model plays the marked sessions here (app/trainer/feedback_run.py ``precheck``), and its
    verdicts are left in ``<out>/precheck.json`` for rank 0's report, so N processes start only for a run that
    trains. Events go to stdout and ``<out>/progress.jsonl``, as the job's own do.
    """
    from app.trainer import distributed
    from app.trainer.jobs import EXIT_CANCELLED, Reporter, run_guarded

    job = _feedback_recipe(args, sys.stdout, None)
    if isinstance(job, int):
        return job
    cfg, raw = job
    cfg.out.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(sys.stdout, cfg.out / "progress.jsonl", quiet=args.quiet)
    cancel = cfg.out / "CANCEL"
    cancel.unlink(missing_ok=True)  # a stale one; one made while the base plays cancels below

    def check() -> None:
        ctx = distributed.DistContext(world=args.gpus)
        ctx.check_divides("sft.batch", cfg.sft.batch)
        if raw.get("grpo"):
            ctx.check_divides("grpo.clips_per_step", cfg.grpo.clips_per_step)
        if cfg.data.sessions and not raw.get("grpo"):
            from app.trainer.feedback_run import precheck

            precheck(cfg, reporter)

    code = run_guarded(check, reporter, "feedback")
    if not code and cancel.exists():
        reporter.emit("cancelled", stage="feedback", message="stopped on request; rerun the same command to resume")
        code = EXIT_CANCELLED
    if code:
        if args.quiet:
            from app.trainer.feedback_report import describe

            print(describe(reporter.events), file=sys.stdout, flush=True)
        return code
    argv = getattr(args, "argv", None) or sys.argv[sys.argv.index("train") + 1:]
    return distributed.launch(args.gpus, distributed.strip_gpus(argv), cfg.out, max_restarts=args.max_restarts)


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
        return run_feedback_action(args)
    return run_action(args.action, args.recipe, _overrides(args.set), quiet=args.quiet, parity=not args.no_parity,
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
        return _launch_feedback(args)
    if not args.recipe:
        return fail("a recipe file is required", f"e.g. duet train {args.action} models/recipes/demo.toml --gpus 2")
    try:
        cfg = load_config(args.recipe, _overrides(args.set))
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
