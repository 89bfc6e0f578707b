"""Mutation testing by hand-written mutants: does the suite notice when an important behaviour is broken?

Each mutant (the table is ``bench/mutants.py``: every package of ``app/``) breaks one behaviour the docs
promise — a path containment check, a bounded read, the API key comparison, the reply guard's loop rule,
an atomic write, eviction order, PAUC's boundaries … — by a textual edit of one source file. For each, the
script copies the project to a temporary folder, applies the edit there (the working tree is never
touched), runs the mutant's focus tests (then its wider tests, if the focus tests all pass) and reports:

- ``KILLED``   a test failed on an assertion (or the run hung past ``--timeout``): the suite noticed;
- ``SURVIVED`` every test passed: a gap in the suite (listed in docs/testing.md with why it is
  acceptable, or a test is added);
- ``ERROR``    the run itself is broken and says nothing about the tests: the mutated file does not
  compile, pytest could not collect or import something (its exit code 2–5), a test failed on an
  ``ImportError``/``SyntaxError``, or the same tests fail without the mutant (the baseline). Never a kill;
- ``STALE``    the pattern no longer occurs exactly once (the code was refactored): rebase the table.

Any ERROR, STALE or SURVIVED makes the script exit 1: an error in the run is a failure of the tool.

    make mutation                                   # every mutant (≈ 35 min on 2 busy cores)
    python bench/mutation.py --only engine          # one package or group, or one mutant id
    python bench/mutation.py --list
    python bench/mutation.py --json bench/results/mutation.json   # also the verdicts, per package

Why hand-written rather than mutmut or cosmic-ray: their operator mutants (``<`` → ``<=``, every constant,
everywhere) would number in the thousands over the ~24,000 lines of ``app/``, most of them in messages and
logging, and many need the engine or GUI tests (up to a minute each on 2 cores); a table chosen for the safety
checks and promises runs in about half an hour and names what each mutant breaks.

The copy holds ``assets/`` (the bundled demo model the engine tests run on) and shares the repository's
``.cache`` (tiny model, trained demo) through a symlink; a mutant in a file those caches are keyed on
(app.core.codekey) would rebuild them, so such a mutant gets an empty cache of its own instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, PACKAGES, REPO, Mutant  # noqa: E402 - the table beside this script

COPIED = ("app", "tests", "models", "bench", "assets", "installer", "docs")
# A failing test whose error is one of these says the run is broken, not that a test caught the mutant.
RUN_ERRORS = re.compile(r"\b(ImportError|ModuleNotFoundError|SyntaxError|IndentationError)\b")


def _cache_keyed_files() -> set[str]:
    sys.path.insert(0, str(REPO))
    from app.core.codekey import source_closure

    mods = source_closure(["app.modelhub.tiny", "app.modelhub.tiny_variants", "app.trainer.sft", "app.trainer.grpo"],
                          REPO)
    return {str(p.relative_to(REPO)) for p in mods.values()}


def _copy(dst: Path, share_cache: bool) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dst / name, ignore=ignore)
    for name in ("pyproject.toml", "Makefile", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dst / name)
    if share_cache:
        (REPO / ".cache").mkdir(exist_ok=True)
        os.symlink(REPO / ".cache", dst / ".cache")


def run_tests(root: Path, tests: tuple[str, ...], timeout: float, *, stop_first: bool = True) -> tuple[str, float, str]:
    """(status, seconds, why): status ``passed``, ``failed`` (a test failed on an assertion), ``timeout``
    or ``error`` (collection, import or syntax errors; pytest's internal errors, no tests collected)."""
    env = {**os.environ, "PYTHONPATH": str(root), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("DUET_CACHE_DIR", None)  # the copy's conftest points it at the copy's .cache
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, f"no verdict within {timeout:.0f} s"
    secs = time.monotonic() - t0
    lines = (p.stdout + p.stderr).strip().splitlines()
    summary = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    first = summary[0] if summary else (lines[-1] if lines else "")
    # pytest's exit codes: 0 passed, 1 a test failed; 2 interrupted (a collection error: the mutant broke an
    # import), 3 internal error, 4 usage error (a test path missing), 5 nothing collected: the run is wrong.
    if p.returncode == 0:
        return "passed", secs, ""
    if p.returncode != 1:
        return "error", secs, f"pytest exit {p.returncode}: {first}"
    if any(RUN_ERRORS.search(line) for line in summary):
        return "error", secs, first
    return "failed", secs, "\n".join(summary)


def _failed_tests(why: str) -> tuple[str, ...]:
    """The test ids named in a run's FAILED/ERROR summary lines (``FAILED tests/x.py::test_y[p] - …``)."""
    return tuple(dict.fromkeys(m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (tests/.+?)(?: - |$)", why, re.M)))


def _judge(root: Path, m: Mutant, file: str, mutated: str, timeout: float) -> tuple[str, float, str]:
    """One mutant's verdict in the copy at ``root`` (the mutated file already written)."""
    if file.endswith(".py"):
        try:
            compile(mutated, file, "exec")
        except SyntaxError as e:
            return "ERROR", 0.0, f"the mutated {file} does not compile: {e}"
    secs = 0.0
    for tests in (m.focus, m.later):
        if not tests:
            continue
        status, more, why = run_tests(root, tests, timeout)
        secs += more
        if status != "passed":
            return {"failed": "KILLED", "timeout": "KILLED", "error": "ERROR"}[status], secs, why
    return "SURVIVED", secs, ""


def score_table(results: list[dict]) -> list[dict]:
    """Per package: mutants, killed, survived, errors (stale counts as an error)."""
    rows = []
    for pkg in PACKAGES:
        mine = [r for r in results if r["package"] == pkg]
        if mine:
            rows.append({"package": pkg, "mutants": len(mine),
                         "killed": sum(r["verdict"] == "KILLED" for r in mine),
                         "survived": sum(r["verdict"] == "SURVIVED" for r in mine),
                         "errors": sum(r["verdict"] in ("ERROR", "STALE") for r in mine)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[],
                    help=f"a package ({', '.join(PACKAGES)}), a group (engine, reward, pauc, sessions) or a mutant id")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="do not rerun a kill's failing tests on the unmutated copy (a test failing anyway reads as a kill)")
    ap.add_argument("--json", type=Path, help="also write the verdicts and the per-package scores here")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or {m.group, m.package, m.id} & set(args.only)]
    if args.list or not chosen:
        for m in MUTANTS:
            where = m.locate(REPO)
            print(f"{m.id:38s} {m.package:9s} {where[0] if where else 'STALE':32s} breaks: {m.breaks}")
        if not chosen and not args.list:
            print(f"nothing matches {args.only}", file=sys.stderr)
        return 0 if args.list else 2

    started = datetime.datetime.now().isoformat(timespec="minutes")
    results: list[dict] = []

    def save(finished: bool) -> None:
        if args.json:  # after every verdict: a run cut short keeps what it judged
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "started": started, "finished": datetime.datetime.now().isoformat(timespec="minutes") if finished else None,
                "command": " ".join(["bench/mutation.py", *(argv if argv is not None else sys.argv[1:])]),
                "machine": {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
                "scores": score_table(results), "mutants": results}, indent=1) + "\n")

    def record(m: Mutant, verdict: str, secs: float, why: str) -> None:
        results.append({"id": m.id, "package": m.package, "verdict": verdict, "seconds": round(secs), "why": why,
                        "breaks": m.breaks})
        shown = f"breaks: {m.breaks}" if verdict == "SURVIVED" else why.splitlines()[0] if why else ""
        print(f"{verdict:8s} {m.id} ({secs:.0f} s) {shown}", flush=True)
        save(finished=False)

    runnable = []
    for m in chosen:
        if m.locate(REPO) is None:
            record(m, "STALE", 0.0, f"no pattern found exactly once in {m.file} (rebase the table)")
        else:
            runnable.append(m)
    keyed = _cache_keyed_files()
    with tempfile.TemporaryDirectory(prefix="duet-mutation-") as tmp:
        base = None
        if not args.no_baseline:  # the unmutated project, copied once: each kill's failing test must pass there
            base = Path(tmp) / "baseline"
            _copy(base, share_cache=True)
        for m in runnable:
            root = Path(tmp) / m.id
            _copy(root, share_cache=True)
            file, mutated = m.locate(root)
            if file in keyed:  # the caches would be rebuilt from mutated code: give it an empty one
                (root / ".cache").unlink()
            (root / file).write_text(mutated)
            verdict, secs, why = _judge(root, m, file, mutated, args.timeout)
            shutil.rmtree(root, ignore_errors=True)
            if verdict == "KILLED" and base is not None and (failed := _failed_tests(why)):
                status, more, base_why = run_tests(base, failed, args.timeout, stop_first=False)
                secs += more
                if status != "passed":  # the same tests fail without the mutant: no verdict on it
                    verdict, why = "ERROR", f"fails without the mutant too (baseline {status}): {base_why or why}"
            record(m, verdict, secs, why)

    rows = score_table(results)
    print(f"\n{'package':10s} {'mutants':>7s} {'killed':>7s} {'survived':>8s} {'errors':>6s}")
    for r in rows:
        print(f"{r['package']:10s} {r['mutants']:7d} {r['killed']:7d} {r['survived']:8d} {r['errors']:6d}")
    by = {v: [r["id"] for r in results if r["verdict"] == v] for v in ("KILLED", "SURVIVED", "ERROR", "STALE")}
    print(f"\n{len(by['KILLED'])}/{len(results)} killed, {len(by['SURVIVED'])} survived, {len(by['STALE'])} stale, "
          f"{len(by['ERROR'])} errors")
    for v in ("SURVIVED", "ERROR", "STALE"):
        for i in by[v]:
            print(f"  {v.lower()}: {i}")
    save(finished=True)
    return 1 if by["SURVIVED"] or by["ERROR"] or by["STALE"] else 0


if __name__ == "__main__":
    sys.exit(main())
