"""The overlay never ends up in the model's own screen frames — checked on real pixels under Xvfb."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def private_display():
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.fail("Xvfb is not installed: apt install xvfb (the README's `make test` does)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([binary, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 20)
        number = os.read(read_fd, 32).decode().strip() if ready else ""
        if not number:
            pytest.fail("Xvfb did not start within 20 s")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(10)


def test_capture_exclusion_real_pixels(private_display: str) -> None:
    env = {**os.environ, "DISPLAY": private_display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO)}
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run([sys.executable, "-m", "tests.ui.exclusion_child"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = dict(line.split()[:2] for line in out.stdout.splitlines() if line.split())
    plain, excluded = int(counts["plain"]), int(counts["excluded"])
    assert plain > 5000, "without exclusion the grab shows the overlay (sanity check of the test itself)"
    assert excluded < 50, f"{excluded} overlay pixels leaked into the model's frame"
