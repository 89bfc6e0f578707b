"""Fault catalogue: a native crash under ``duet serve`` ends its server process, not the service.

The real ``duet serve`` (a supervisor and its server child); the child gets a real SIGSEGV as llama.cpp
would raise it. The supervisor says what happened, starts the server again on the safe settings (CPU
only, the portable x64 CPU library) on the same socket, and an authenticated client is answered again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.engine.loopback import listening_port

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _models(port: int, key: str, limit: float = 120) -> dict:
    deadline = time.monotonic() + limit
    while True:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        try:
            return json.loads(urllib.request.urlopen(req, timeout=60).read())
        except (OSError, urllib.error.HTTPError):
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)


def test_duet_serve_survives_a_crash_of_its_server_and_serves_again(tiny_model, tmp_path) -> None:
    key = "k" * 32
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO), "DUET_SERVE_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model), "--mmproj",
                             str(tiny_model.mmproj), "--port", "0", "--gpu-layers", "0", "--n-ctx", "1024"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    pumper = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    pumper.start()
    try:
        port = listening_port(proc)
        assert _models(port, key)["data"]
        (server,) = _children(proc.pid)
        assert key not in Path(f"/proc/{server}/cmdline").read_text()  # the key travels by environment only
        assert b"OMP_WAIT_POLICY=PASSIVE" in Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        os.kill(server, signal.SIGSEGV)
        assert _models(port, key)["data"]  # the same port answers again
        (again,) = _children(proc.pid)
        assert again != server
        environ = Path(f"/proc/{again}/environ").read_bytes().split(b"\0")
        assert b"DUET_CPU_VARIANT=x64" in environ
        assert proc.poll() is None
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
        pumper.join(timeout=30)
    err = "".join(lines)
    assert rc == 0, err[-3000:]
    assert "duet serve: The model's engine stopped (SIGSEGV)" in err, err[-3000:]
    assert "restarting the server (CPU only, portable kernels)" in err
    assert "Traceback" not in err


def test_the_server_child_ends_when_its_supervisor_is_killed(tiny_model, tmp_path) -> None:
    """A SIGKILLed supervisor cannot stop its child; left running, the child would hold the port with nobody to
    restart or stop it (one did, for 18 minutes, in a test run). The child watches its parent and ends."""
    key = "k" * 32
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO), "DUET_SERVE_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model), "--mmproj",
                             str(tiny_model.mmproj), "--port", "0", "--gpu-layers", "0", "--n-ctx", "1024"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = listening_port(proc)
        assert _models(port, key)["data"]
        (server,) = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{server}").exists() and Path(f"/proc/{server}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, "the server child outlived its supervisor"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
