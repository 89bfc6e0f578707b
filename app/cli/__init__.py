"""The ``duet`` command: ``gui`` (default), ``run`` (headless), ``serve``, ``models``, ``eval``, ``train``, ``sessions``,
``doctor``.

Every subcommand is a thin layer over the Qt-free packages, so what the GUI does can be scripted,
benchmarked and tested from here. Each group of subcommands lives in its own module here
(``run``, ``serve``, ``models``, ``sessions``, ``doctor``) or beside its package (``app/eval/cli.py``,
``app/trainer/cli.py``) and registers itself with ``add_commands``.
"""

from __future__ import annotations

import argparse
import logging
import sys


class _VersionAction(argparse.Action):
    """``--version``: argparse's own action re-wraps the text into one line; this keeps its lines."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        from app.core.version import version_text

        print(version_text())
        parser.exit()


def _is_gui_flag(arg: str) -> bool:
    """``duet --no-first-run``, ``duet --source clip.mp4 --start``: the app is the default command, so its flags
    work without ``gui`` (``--flag=value`` too). ``duet -h``, ``--version`` and ``-v`` stay the command's own."""
    from app.ui.main import gui_flags  # argparse only: Qt loads when the app starts

    return arg.split("=", 1)[0] in gui_flags()


def build_parser() -> argparse.ArgumentParser:
    from app.cli import doctor, models, run, serve, sessions
    from app.eval.cli import add_commands as add_eval
    from app.trainer.cli import add_commands as add_train

    ap = argparse.ArgumentParser(prog="duet", description="Duet: an assistant that watches with you.")
    ap.add_argument("-v", "--log-level", default="WARNING", help="DEBUG, INFO, WARNING …")
    ap.add_argument("--version", action=_VersionAction, help="the version and where to get a newer one")
    sub = ap.add_subparsers(dest="command")

    sub.add_parser("gui", help="the desktop app (default; `duet gui --help` lists its flags, which also work "
                               "without `gui`: `duet --no-first-run`)")
    run.add_commands(sub)
    serve.add_commands(sub)
    models.add_commands(sub)
    add_eval(sub)
    add_train(sub)
    sessions.add_commands(sub)
    doctor.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "engine-worker":  # the model's own process (app/engine/engine_process.py), not for users
        from app.engine.engine_worker import main as engine_main

        return engine_main()
    if args and (args[0] == "gui" or _is_gui_flag(args[0])):  # the app's own flags: app/ui/main.py
        from app.ui.main import main as gui_main

        return gui_main(args[1:] if args[0] == "gui" else args)
    ap = build_parser()
    a = ap.parse_args(args)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if getattr(a, "gpu", None) is not None and a.command != "models":
        from app.modelhub.hardware import select_gpu

        select_gpu(a.gpu)  # before llama.cpp starts: it reads the device visibility once
    if a.command in (None, "gui"):
        from app.ui.main import main as gui_main

        return gui_main([])
    import sqlite3

    from app.core.errors import DuetError, describe

    try:
        return a.func(a)
    except DuetError as e:  # written for the user; anything else but the OS's errors below is a bug
        print(f"duet: error: {describe(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"duet: error: {describe(e)}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:  # the judge cache: "database or disk is full"
        if "full" not in str(e):
            raise
        print(f"duet: error: {describe(e)}", file=sys.stderr)
        return 2

