"""Fault catalogue, part 12: what a killed conversion or quantization leaves behind.

The converter and the quantizer write each output under ``.<name>.partial-<pid>`` and rename it when
whole, so a kill never leaves half a model under the real name; but the temporary stayed for ever
(as large as the output had grown). The next run removes those of processes that are gone, and keeps
those of a process still running (a conversion in another terminal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.timeout(300)
def test_a_killed_convert_leaves_a_temporary_that_the_next_run_removes(run, data_dir, tiny_model, tmp_path):
    out = tmp_path / "gguf"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DUET_DATA_DIR": str(data_dir)}
    # A real conversion, SIGKILLed as soon as its temporary appears (as a closed laptop or the OOM killer would).
    proc = subprocess.Popen([sys.executable, "-m", "app", "models", "convert", str(tiny_model.hf_dir), "--out",
                             str(out), "--name", "t"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob(".*.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(out.glob(".*.partial-*"))
    if not left:
        pytest.skip("the conversion finished before it could be killed mid-write")
    assert all(p.name.endswith(f".partial-{proc.pid}") for p in left)
    # One of a process that still runs is someone's conversion in progress: kept.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = out / f".t-f16.gguf.partial-{live.pid}"
        theirs.write_bytes(b"in progress")
        r = run("models", "convert", tiny_model.hf_dir, "--out", out, "--name", "t", "--overwrite")
        assert r.rc == 0, r.err
        assert not any(p.exists() for p in left)
        assert theirs.exists()
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in out.iterdir()) == sorted([".t-f16.gguf.partial-" + str(live.pid),
                                                            "mmproj-t-f16.gguf", "t-f16.gguf"])


def test_a_killed_quantization_leaves_nothing_on_the_next_run(run, data_dir, tiny_model, tmp_path):
    out = tmp_path / "q.gguf"
    stale = tmp_path / f".q.gguf.partial-{_dead_pid()}"
    stale.write_bytes(b"\0" * 4096)
    other = tmp_path / f".other.gguf.partial-{_dead_pid()}"  # another output's: not this run's to judge
    other.write_bytes(b"\0")
    r = run("models", "quantize", tiny_model.model, "--type", "Q8_0", "--out", out)
    assert r.rc == 0, r.err
    assert not stale.exists() and other.exists() and out.is_file()
