"""Mutation testing by hand-written mutants: does the suite notice when an important behaviour is broken?

Each mutant below breaks one behaviour the docs promise (the engine's instant silence, eviction order,
the reward's weights, PAUC's boundaries, the session log's fsync …) by a textual edit of one source
file. For each, the script copies the project to a temporary folder, applies the edit there (the
working tree is never touched), runs the tests of that part and reports the mutant *killed* (some test
failed) or *survived* (every test passed: a gap in the suite). Survivors are listed in
docs/testing.md with the reason they are acceptable, or a test is added until none that matters is left.

    make mutation                                 # every mutant (≈ 20 min on 2 cores)
    python bench/mutation.py --only engine        # one group, or one mutant id
    python bench/mutation.py --list

Why hand-written rather than mutmut: mutmut's operator mutants (``<`` → ``<=`` everywhere) number in
the thousands for these modules and each needs the engine tests (a minute); a table of mutants chosen
for the behaviours that matter runs in minutes and names what it checks. A pattern that no longer
matches (the code was refactored) is reported as ``stale``: rebase the table.

The copy holds ``assets/`` (the bundled demo model the engine tests run on) and shares the repository's
``.cache`` (tiny model, trained demo) through a symlink; a mutant in a file those caches are keyed on
(app.core.codekey) would rebuild them, so such a mutant gets an empty cache of its own instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ENGINE_TESTS = ("tests/engine/test_llama_backend_trained.py", "tests/engine/test_llama_backend.py",
                "tests/engine/test_incremental.py", "tests/engine/test_llama_backend_unsayable.py")
REWARD_TESTS = ("tests/trainer/test_reward.py",)
PAUC_TESTS = ("tests/eval/test_pauc.py", "tests/eval/test_scoring.py")
# The session store's tests: test_sessions.py, and those of any module split off it (test_session_read.py …).
SESSION_TESTS = tuple(sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/core").glob("test_session*.py")))
TRAINED = "tests/engine/test_llama_backend_trained.py::"
EVICTION = f"{TRAINED}test_eviction_removes_oldest_frames_first_then_oldest_silent_turns"
INCREMENTAL = f"{TRAINED}test_incremental_equals_full_history_with_replies_and_silences_kept"
UNSAYABLE = "tests/engine/test_llama_backend_unsayable.py"


@dataclass(frozen=True)
class Mutant:
    id: str
    group: str
    file: str | tuple[str, ...]  # where the code lives (alternatives: the first holding the pattern once)
    find: str | tuple[str, ...]  # must occur exactly once in the file (alternatives: the first that does)
    replace: str | tuple[str, ...]  # one per alternative
    breaks: str  # the behaviour this mutant breaks
    focus: tuple[str, ...] = ()  # tests expected to kill it, run first (the whole group runs if they pass)

    def edit(self, source: str) -> str | None:
        """The mutated source, or None when no alternative matches exactly once (a stale pattern)."""
        finds = (self.find,) if isinstance(self.find, str) else self.find
        reps = (self.replace,) if isinstance(self.replace, str) else self.replace
        for f, r in zip(finds, reps, strict=True):
            if source.count(f) == 1:
                return source.replace(f, r)
        return None

    def locate(self, root: Path) -> tuple[str, str] | None:
        """(file, mutated source) in the project at ``root``, or None when the pattern is stale everywhere."""
        for f in (self.file,) if isinstance(self.file, str) else self.file:
            path = root / f
            if path.is_file() and (mutated := self.edit(path.read_text())) is not None:
                return f, mutated
        return None

    @property
    def tests(self) -> tuple[str, ...]:
        return {"engine": ENGINE_TESTS, "reward": REWARD_TESTS, "pauc": PAUC_TESTS, "sessions": SESSION_TESTS}[self.group]


E, R, P, S = "app/engine/llama_backend.py", "app/trainer/reward.py", "app/eval/pauc.py", "app/core/sessions.py"
N = "app/engine/llama_native.py"
SR = "app/core/session_read.py"  # load_session, once split off sessions.py
MUTANTS: tuple[Mutant, ...] = (
    # --- the engine -------------------------------------------------------------------------------
    Mutant("engine-no-instant-silence", "engine", E,
           ("return int(np.argmax(biased)) == self._no_reply_first", "self.settings.instant_silence and int("),
           ("return False", "False and int("), "silent turns are decided from the first token's logits, without a decode loop",
           (f"{TRAINED}test_instant_silence_decides_as_token_by_token_greedy_decoding",)),
    Mutant("engine-evict-newest-first", "engine", E,
           "closed = [t for t in self.turns if t.end is not None and not t.removed]",
           "closed = [t for t in self.turns if t.end is not None and not t.removed][::-1]",
           "eviction removes the oldest frames and turns first", (EVICTION,)),
    Mutant("engine-evict-dialogue-first", "engine", E, "for dialogue in (False, True):",
           "for dialogue in (True, False):", "silent turns go before turns that carry dialogue", (EVICTION,)),
    Mutant("engine-always-rerender-replies", "engine", E,
           "self.model.tokenize(text_out, parse_special=False) != tokens:", "True:",
           "a canonical reply's tokens stay in the cache as decoded", (INCREMENTAL,)),
    Mutant("engine-talkativeness-sign", "engine", E, "biased[quiet] -= talkativeness",
           "biased[quiet] += talkativeness", "positive talkativeness makes the model speak more"),
    Mutant("engine-unsayable-allowed", "engine", E, "biased[self._unsayable] = -np.inf",
           "pass", "control tokens are never sampled at the decision", (UNSAYABLE,)),
    Mutant("engine-unsayable-in-reply", "engine", E, "logits[self._unsayable] = -np.inf",
           "pass", "control tokens are never sampled after a reply's first token", (UNSAYABLE,)),
    Mutant("engine-unused-sayable", "engine", N, "LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED",
           "LLAMA_TOKEN_ATTR_CONTROL", "unused padding tokens are unsayable too", (UNSAYABLE,)),
    Mutant("engine-end-of-turn-unsayable", "engine", N, " and not self.is_eog(t)]", "]",
           "end-of-turn tokens stay sayable (a reply can end; a turn can be silent by ending at once)",
           (f"{TRAINED}test_instant_silence_decides_as_token_by_token_greedy_decoding",)),
    Mutant("engine-frame-cells-not-freed", "engine", E, "self.n_cells -= sp.cells",
           "self.n_cells -= 0", "evicted frames free their cells", (EVICTION,)),
    Mutant("engine-cut-reply-not-evaluated", "engine", E,
           "self.ctx.decode_tokens([out[-1]], self.n_past, logits_last=False)", "return out",
           "a reply cut at max_new_tokens is in the cache whole",
           ("tests/engine/test_llama_backend.py::test_incremental_gives_same_transcript_as_full_reevaluation",)),
    # --- the GRPO reward -------------------------------------------------------------------------
    Mutant("reward-weights-swapped", "reward", R, "weights.rep * r_rep + weights.in_span * r_in_span",
           "weights.in_span * r_rep + weights.rep * r_in_span", "each weight multiplies its own part"),
    Mutant("reward-default-in-span-weight", "reward", R, "in_span: float = 0.5", "in_span: float = 1.0",
           "the default weights are the run scripts' 3 / 2 / 0.5 / 2"),
    Mutant("reward-in-span-over-replies", "reward", R, "-len(out_replies) / len(out_turns)",
           "-len(out_replies) / max(1, len(out_replies))", "out-of-span replies are divided by out-of-span turns"),
    Mutant("reward-prefix-strict", "reward", R, ">= prefix_chars for p in earlier", "> prefix_chars for p in earlier",
           "a 50-character common prefix is already a repeat"),
    Mutant("reward-no-double-count", "reward", R, "if len(distinct) > 1:", "if False:",
           "2nd and later distinct in-span replies count their repetition verdict twice"),
    Mutant("reward-duplicate-free", "reward", R, "rep_list.append(1.0)", "rep_list.append(0.0)",
           "an exact duplicate counts as a repetition"),
    Mutant("reward-prefix-denominator", "reward", R, "r_pfx = -sum(flags) / len(flags)",
           "r_pfx = -sum(flags) / max(1, sum(1 for _, r in pred if r != NO_REPLY))",
           "the prefix part divides by all turns, NO REPLY included"),
    # --- PAUC --------------------------------------------------------------------------------------
    Mutant("pauc-boundary-exclusive", "pauc", P, "if t <= related_end:", "if t < related_end:",
           "a point at the related end counts as inside it"),
    Mutant("pauc-drop-equal", "pauc", P, "elif score < last_in_related:", "elif score <= last_in_related:",
           "only a strictly lower later point is dropped"),
    Mutant("pauc-omega-reversed", "pauc", P, "x * (1.0 - omega)", "x * omega", "ω shrinks x towards the start"),
    Mutant("pauc-start-score-zero", "pauc", P, "area, prev_x, prev_y = 0.0, 0.0, start_score",
           "area, prev_x, prev_y = 0.0, 0.0, 0.0", "the curve starts at 0.5"),
    Mutant("pauc-span-end-exclusive", "pauc", P, "return span[0] <= time <= span[1]",
           "return span[0] <= time < span[1]", "reply spans include their end"),
    Mutant("pauc-not-cumulative", "pauc", P, "distinct[: i + 1]", "distinct[i : i + 1]",
           "the judge sees all distinct replies so far"),
    Mutant("pauc-no-point-zero", "pauc", P, "        return start_score / max_y\n", "        return 0.0\n",
           "a turn with no point scores 0.25"),
    # --- the session store -------------------------------------------------------------------------
    Mutant("sessions-no-fsync", "sessions", S, "                os.fsync(self.fileno)", "                pass",
           "every record is fsynced (on the helper thread)"),
    Mutant("sessions-no-flush", "sessions", S,
           ("self._fh.flush()  # in the kernel now", "append_whole(self._fh.fileno(), line)",
            "append_whole(self._fh.fileno(), line, fresh_line=True)"),
           ("pass  #", "self._fh.write(line.decode(\"utf-8\"))",
            "self._fh.write(line.decode(\"utf-8\"))"),  # the last two: left in Python's buffer
           "every record is in the kernel before add_* returns (survives a kill)"),
    Mutant("sessions-feedback-no-fsync", "sessions", S,
           ("        os.fsync(fh.fileno())\n", '"utf-8"), fsync=True)', "fsync=True, fresh_line=True)"),
           ("", '"utf-8"), fsync=False)', "fsync=False, fresh_line=True)"),
           "feedback added from the browser is fsynced"),
    Mutant("sessions-feedback-toggle-ignored", "sessions", (SR, S),
           "(kinds.add if m.on else kinds.discard)(m.kind)", "kinds.add(m.kind)",
           "feedback switched off again is off"),
    Mutant("sessions-damaged-line-fatal", "sessions", (SR, S),
           ("                except json.JSONDecodeError:\n                    rec = None\n",
            "        return json.loads(line), False\n    except json.JSONDecodeError:\n        pass\n"),
           ("                except json.JSONDecodeError:\n                    raise\n",
            "        return json.loads(line), False\n    except json.JSONDecodeError:\n        raise\n"),
           "a cut-off last line (killed mid-write) is skipped"),
    Mutant("sessions-mark-glued-onto-a-torn-line", "sessions", "app/core/atomic.py",
           'if fresh_line and size and _last_byte(fd, size) != b"\\n":', "if False:",
           "a mark appended after a torn last line starts a fresh line (else both are lost)",
           ("tests/core/test_sessions.py::test_a_mark_after_a_torn_line_starts_a_fresh_line",)),
    Mutant("sessions-no-end-record", "sessions", S, "self._append({\"type\": \"end\", \"reason\": reason})",
           "pass", "a closed session says how it ended"),
)


def _cache_keyed_files() -> set[str]:
    sys.path.insert(0, str(REPO))
    from app.core.codekey import source_closure

    mods = source_closure(["app.modelhub.tiny", "app.modelhub.tiny_variants", "app.trainer.sft", "app.trainer.grpo"],
                          REPO)
    return {str(p.relative_to(REPO)) for p in mods.values()}


def _copy(dst: Path, share_cache: bool) -> None:
    for name in ("app", "tests", "models", "bench", "assets"):  # assets: the bundled demo the engine tests run on
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", dst / "pyproject.toml")
    if share_cache:
        (REPO / ".cache").mkdir(exist_ok=True)
        os.symlink(REPO / ".cache", dst / ".cache")


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("DUET_CACHE_DIR", None)  # the copy's conftest points it at the copy's .cache
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, ""
    tail = (p.stdout + p.stderr).strip().splitlines()
    failed = next((line for line in tail if line.startswith(("FAILED", "ERROR"))), tail[-1] if tail else "")
    # pytest's exit codes: 1 a test failed, 2 collection failed (the mutant broke an import); 3-5 (internal
    # error, a test path missing, nothing collected) say the run itself is wrong, not that a test caught it.
    status = {0: "passed", 1: "failed", 2: "failed"}.get(p.returncode, "error")
    return status, time.monotonic() - t0, failed if status != "error" else f"pytest exit {p.returncode}: {failed}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="a group (engine, reward, pauc, sessions) or a mutant id")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per test run (default 1200)")
    ap.add_argument("--no-baseline", action="store_true", help="skip checking that the unmutated tests pass")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.group in args.only or m.id in args.only]
    if args.list or not chosen:
        for m in MUTANTS:
            where = m.locate(REPO)
            print(f"{m.id:36s} {where[0] if where else 'STALE':30s} breaks: {m.breaks}")
        return 0 if chosen or args.list else 2

    stale = []
    for m in chosen:
        if m.locate(REPO) is None:
            stale.append(m)
            print(f"STALE    {m.id}: no pattern found exactly once in {m.file} (rebase the table)", flush=True)
    keyed = _cache_keyed_files()
    results: list[tuple[Mutant, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="duet-mutation-") as tmp:
        if not args.no_baseline:
            for group in dict.fromkeys(m.group for m in chosen):
                base = Path(tmp) / f"baseline-{group}"
                _copy(base, share_cache=True)
                status, secs, why = run_tests(base, chosen[[m.group for m in chosen].index(group)].tests, args.timeout)
                print(f"BASELINE {group}: {status} in {secs:.0f} s {why}", flush=True)
                if status != "passed":
                    print("the unmutated tests must pass first", file=sys.stderr)
                    return 2
        for m in chosen:
            if m in stale:
                continue
            root = Path(tmp) / m.id
            _copy(root, share_cache=True)
            file, mutated = m.locate(root)
            if file in keyed:  # the caches would be rebuilt from mutated code: give it an empty one
                (root / ".cache").unlink()
            (root / file).write_text(mutated)
            status, secs, why = run_tests(root, m.focus, args.timeout) if m.focus else ("passed", 0.0, "")
            if status == "passed":
                status, more, why = run_tests(root, m.tests, args.timeout)
                secs += more
            verdict = {"failed": "KILLED", "timeout": "KILLED", "passed": "SURVIVED", "error": "ERROR"}[status]
            results.append((m, verdict, secs, why))
            print(f"{verdict:8s} {m.id} ({secs:.0f} s) {'breaks: ' + m.breaks if verdict == 'SURVIVED' else why}",
                  flush=True)
            shutil.rmtree(root, ignore_errors=True)
    killed = sum(v == "KILLED" for _, v, _, _ in results)
    survived = [m.id for m, v, _, _ in results if v == "SURVIVED"]
    errors = [m.id for m, v, _, _ in results if v == "ERROR"]
    print(f"\n{killed}/{len(results)} killed, {len(survived)} survived, {len(stale)} stale, {len(errors)} errors")
    for s in survived:
        print(f"  survived: {s}")
    for e in errors:
        print(f"  error (the test run itself failed, see above): {e}")
    return 1 if survived or stale or errors else 0


if __name__ == "__main__":
    sys.exit(main())
