"""``duet train feedback``: its flags, the recipe they make, the run, and the check before a ``--gpus N`` launch.

The user's marked sessions (and any replay data) become a recipe (app/trainer/feedback_job.py) whose rounds of SFT
go on until the new model says every correction (app/trainer/feedback_run.py); this module is the command around
them. The other actions are app/trainer/cli.py's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.trainer.cli_worker import parse_overrides, worker_context, worker_exit, worker_reporter


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``feedback`` action's flags, as their own group of ``duet train``'s help."""
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


def feedback_recipe(args: argparse.Namespace, stream: Any,
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
                            max_minutes=args.max_minutes, overrides=parse_overrides(args.set))
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
    job = feedback_recipe(args, stream, sessions_root)
    if isinstance(job, int):
        return job
    cfg, raw = job
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = worker_context(cfg.device)
    if not ctx.enabled:
        record_job(cfg.out)  # with torchrun, the launcher recorded itself
    reporter = worker_reporter(ctx, stream, cfg.out, args.quiet)
    cancel = cfg.out / "CANCEL"
    if not ctx.enabled:
        cancel.unlink(missing_ok=True)
    stop = StopFlag(cancel).install()
    try:
        code = run_guarded(lambda: run_feedback(cfg, raw, reporter, stop, parity=args.parity,
                                                library_root=library_root), reporter, "feedback")
        code = worker_exit(ctx, cfg.out, code)
    finally:
        stop.restore()
    if args.quiet and ctx.is_main:  # no JSON lines on stdout: what the job did, in words (feedback_report.py)
        from app.trainer.feedback_report import describe

        print(describe(reporter.events), file=stream, flush=True)
    return code


def launch_feedback(args: argparse.Namespace) -> int:
    """``duet train feedback --gpus N``: in this one process, refuse what every worker would, then launch.

    That is the arguments, the split of ``sft.batch`` (and ``grpo.clips_per_step``) over N, and "nothing to
    learn": the base model plays the marked sessions here (app/trainer/feedback_run.py ``precheck``), and its
    verdicts are left in ``<out>/precheck.json`` for rank 0's report, so N processes start only for a run that
    trains. Events go to stdout and ``<out>/progress.jsonl``, as the job's own do.
    """
    from app.trainer import distributed
    from app.trainer.jobs import EXIT_CANCELLED, Reporter, run_guarded

    job = feedback_recipe(args, sys.stdout, None)
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


def record_job(folder: Path) -> None:
    """``job.json`` (pid, the command to resume with), so the Train page finds a job started from a terminal."""
    import time

    from app.core.atomic import write_json_atomic

    if "feedback" not in sys.argv:
        return  # called in-process (tests): no command line to record
    head = [sys.executable, "train"] if getattr(sys, "frozen", False) else [sys.executable, "-m", "app.trainer.cli"]
    argv = [*head, *sys.argv[sys.argv.index("feedback"):]]
    write_json_atomic(folder / "job.json", {"pid": os.getpid(), "argv": argv, "started": time.time()})
