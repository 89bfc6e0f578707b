"""What every ``duet train`` job process does around its stage, whichever the action (app/trainer/cli.py,
app/trainer/cli_feedback.py): read ``--set`` overrides, find its place in a torchrun job, report, and exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items → recipe overrides; a value is parsed as TOML, else kept as the string."""
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


def worker_context(device: str) -> Any:
    """This process's place in a torchrun job (joining its process group), or a single process's context."""
    from app.trainer import distributed

    return distributed.init_from_env(device) if distributed.in_torchrun() else distributed.context()


def worker_reporter(ctx: Any, stream: Any, out: Path, quiet: bool) -> Any:
    """Rank 0 reports (stdout and progress.jsonl); the other ranks train silently (their errors go to stderr)."""
    from app.trainer.jobs import Reporter

    if ctx.is_main:
        return Reporter(stream, out / "progress.jsonl", quiet=quiet)
    return Reporter(None)


def worker_exit(ctx: Any, out: Path, code: int) -> int:
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
