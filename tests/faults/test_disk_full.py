"""Fault catalogue, part 3: a real full disk.

Each case runs ``duet`` in a child process inside its own mount namespace, on a tmpfs of a few
kilobytes mounted there (``unshare -m``, or ``unshare -rm`` without root): the kernel's own ENOSPC,
not a patched ``write``. The child reports the exit code, the message and the files left (with
their SHA-256), since the tmpfs vanishes with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r'''
import contextlib, hashlib, io, json, os, sys
from pathlib import Path
root = Path(os.environ["FS"])
from tests.faults import fulldisk
def listing():
    return fulldisk.listing(root)
def fill():
    fulldisk.fill_up(root / "filler")
from app.cli import main as duet
def run(*argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = duet([str(a) for a in argv])
    return {"rc": rc, "err": err.getvalue(), "out": out.getvalue()}
result = {}
'''


def run_on_tiny_fs(tmp_path: Path, size_kb: int, argv: list[str], env: dict[str, str] | None = None,
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``argv`` in a private mount namespace where ``$FS`` (``tmp_path/fs``) is a tmpfs of ``size_kb``."""
    if not shutil.which("unshare"):
        pytest.fail("unshare is missing: apt install util-linux (Debian installs it everywhere)")
    fs = tmp_path / "fs"
    fs.mkdir()
    flags = ["-m"] if os.geteuid() == 0 else ["-rm"]
    cmd = ["unshare", *flags, "sh", "-c", f'mount -t tmpfs -o size={size_kb}k tmpfs "$FS" && exec "$@"', "sh",
           *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "FS": str(fs), "PYTHONPATH": str(REPO), **(env or {})})


def in_tiny_fs(tmp_path: Path, size_kb: int, body: str, env: dict[str, str] | None = None) -> dict:
    """Run ``body`` (Python, after CHILD's helpers) with ``root`` on a fresh tmpfs of ``size_kb``."""
    script = CHILD + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(result))\n"
    proc = run_on_tiny_fs(tmp_path, size_kb, [sys.executable, "-c", script], env)
    if proc.returncode != 0 and "mount" in proc.stderr and "RESULT" not in proc.stdout:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][7:])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


DISK_FULL = "the disk is full"


def test_convert_overwrite_on_a_full_disk_keeps_the_old_pair(tmp_path, tiny_model):
    sizes = {p.name: p.stat().st_size for p in (tiny_model.model, tiny_model.mmproj)}
    text, vision = sizes[tiny_model.model.name], sizes[tiny_model.mmproj.name]
    # Room for the old pair, the new text model and half the new mmproj: it fails halfway through the set.
    size_kb = (2 * text + vision + vision // 2) // 1024 + 8
    r = in_tiny_fs(tmp_path, size_kb, f'''
        out = root / "o"
        result["first"] = run("models", "convert", {str(tiny_model.hf_dir)!r}, "--out", out, "--outtype", "f32",
                              "--name", "t")
        result["before"] = listing()
        result["second"] = run("models", "convert", {str(tiny_model.hf_dir)!r}, "--out", out, "--outtype", "f32",
                               "--name", "t", "--overwrite")
        result["after"] = listing()
    ''')
    assert r["first"]["rc"] == 0, r["first"]["err"]
    assert sorted(r["before"]) == ["o/mmproj-t-f32.gguf", "o/t-f32.gguf"]
    assert r["second"]["rc"] == 2
    assert DISK_FULL in r["second"]["err"] and "Traceback" not in r["second"]["err"]
    assert r["after"] == r["before"]  # the old pair, byte for byte, and no temporaries left


def test_run_jsonl_on_a_full_disk_stops_with_whole_records(tmp_path, tiny_model, vtest_avi):
    r = in_tiny_fs(tmp_path, 16, f'''
        (root / "earlier.jsonl").write_text('{{"kept": true}}\\n')
        result["run"] = run("run", "--source", {str(vtest_avi)!r}, "--model", "tiny", "--fast", "--n-ctx", "4096",
                            "--max-turns", "200", "--max-new-tokens", "4", "--jsonl", root / "steps.jsonl")
        text = (root / "steps.jsonl").read_text()
        result["lines"] = text.splitlines()
        result["ends_whole"] = text.endswith("\\n")
        result["earlier"] = (root / "earlier.jsonl").read_text()
    ''', env={"DUET_CACHE_DIR": os.environ.get("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))})
    assert r["run"]["rc"] == 2, r["run"]["err"][-2000:]
    err = r["run"]["err"]
    assert DISK_FULL in err and "Traceback" not in err
    n = len(r["lines"])
    assert n > 3 and r["ends_whole"]
    assert f"it keeps its first {n} records, whole" in err
    assert [json.loads(x)["turn"] for x in r["lines"]] == list(range(n))
    assert r["earlier"] == '{"kept": true}\n'


def test_eval_rescoring_on_a_full_disk_keeps_the_earlier_report(tmp_path, tiny_model):
    from app.cli import main as duet

    data = tmp_path / "synth"
    assert duet(["eval", "make-synthetic", str(data), "--families", "appear", "--difficulty", "easy",
                 "--per-family", "1", "--seed", "3"]) == 0
    r = in_tiny_fs(tmp_path, 256, f'''
        out = root / "run"
        result["first"] = run("eval", {str(data)!r}, "--model", "tiny", "--out", out, "--judge", "exact",
                              "--no-timelines", "--max-new-tokens", "4")
        result["before"] = listing()
        fill()
        result["again"] = run("eval", {str(data)!r}, "--score-only", "--out", out, "--judge", "overlap",
                              "--no-timelines")
        (root / "filler").unlink()
        result["after"] = listing()
    ''', env={"DUET_CACHE_DIR": os.environ.get("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))})
    assert r["first"]["rc"] in (0, 3), r["first"]["err"][-2000:]
    assert {"run/predictions.jsonl", "run/report.json", "run/report.md"} <= set(r["before"])
    assert r["again"]["rc"] == 2 and DISK_FULL in r["again"]["err"], r["again"]["err"][-2000:]
    assert r["after"] == r["before"]


def test_importing_a_model_on_a_full_disk_leaves_the_library_as_it_was(tmp_path, tiny_model):
    r = in_tiny_fs(tmp_path, 64, f'''
        os.environ["DUET_DATA_DIR"] = str(root)
        result["small"] = run("models", "import", "linked", {str(tiny_model.model)!r}, {str(tiny_model.mmproj)!r},
                              "--link")
        result["before"] = listing()
        result["copy"] = run("models", "import", "copied", {str(tiny_model.model)!r}, {str(tiny_model.mmproj)!r})
        result["after"] = listing()
        result["list"] = run("models", "list")
    ''')
    assert r["small"]["rc"] == 0
    assert r["copy"]["rc"] == 2 and DISK_FULL in r["copy"]["err"]
    after = {k: v for k, v in r["after"].items() if not k.startswith("models/copied/")}
    assert after == r["before"]
    assert not any(".partial" in k for k in r["after"])
    assert "linked" in r["list"]["out"] and "copied" not in r["list"]["out"]


def test_a_session_log_on_a_disk_that_stays_full_is_left_whole(tmp_path):
    """The live transcript's writer: a step that cannot be written leaves no half line; when even the
    end record does not fit, the log is let go as it is (whole, just without an end); a session that
    cannot even be created leaves no half-made folder."""
    r = in_tiny_fs(tmp_path, 64, '''
        import errno
        import numpy as np
        from app.core.sessions import CUT_SHORT, SessionStore, is_running, load_session
        from app.core.types import Frame, StepResult, StepTimings
        store = SessionStore(root / "sessions")
        w = store.create({"source": "file:x.mp4", "model": "tiny"})
        img = np.full((24, 32, 3), 90, dtype=np.uint8)
        step = lambda t: StepResult(turn=t, video_time=t + 1.0, silent=False, text=f"reply {t}",
                                    frames=(Frame(image=img, time=t + 1.0, index=t, source="x"),),
                                    timings=StepTimings(total_ms=1.0))
        for t in range(3):
            w.add_step(step(t))
        log = w.directory / "events.jsonl"
        rec = {"type": "fold", "turn": 1, "wall": 1.5, "pad": ""}  # a valid record, padded to a page boundary
        rec["pad"] = " " * ((-log.stat().st_size - len(json.dumps(rec)) - 1) % 4096)
        w.add_record(rec)
        result["aligned"] = log.stat().st_size % 4096
        before = log.read_bytes()
        fill()
        try:
            w.add_step(step(3))
        except OSError as e:
            result["step"] = [errno.errorcode[e.errno], e.filename]
        try:
            w.close(CUT_SHORT)
        except OSError as e:
            result["close"] = [errno.errorcode[e.errno], e.filename]
            w.abandon()
        result["unchanged"] = log.read_bytes() == before
        s = load_session(w.directory)
        result["saved"] = [len(s.steps), s.damaged_lines, s.ended, is_running(w.directory)]
        try:
            store.create({"source": "file:y.mp4", "model": "tiny"})
        except OSError as e:
            result["create"] = errno.errorcode[e.errno]
        result["sessions"] = [p.name for p in (root / "sessions").iterdir()]
        (root / "filler").unlink()
        result["listed"] = len(store.list())
    ''')
    assert r["aligned"] == 0  # the log ends on a page boundary: no slack for a record to slip into
    assert r["step"][0] == "ENOSPC" and r["step"][1].endswith("/thumbs/turn-000003.jpg")
    assert r["close"][0] == "ENOSPC" and r["close"][1].endswith("/events.jsonl")
    assert r["unchanged"]
    assert r["saved"] == [3, 0, None, False]  # three whole steps, nothing damaged, no longer "running"
    assert r["create"] == "ENOSPC"
    assert len(r["sessions"]) == 1 and r["listed"] == 1  # no half-made second session folder
