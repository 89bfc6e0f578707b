"""Fixtures for capture tests: a private Xvfb server and a tiny libX11 helper to draw on it."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from app.capture.x11windows import load_xlib

from .xdraw import XDraw


def _reachable(display: str) -> bool:
    lib = load_xlib()
    dpy = lib.XOpenDisplay(display.encode()) if lib else None
    if dpy:
        lib.XCloseDisplay(dpy)
    return bool(dpy)


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    """A private X server (640×480, 24-bit) on a random high display number nobody else is using.

    ``-noreset``: by default Xvfb resets when its last client leaves, and a connection made during
    that reset fails, which made tests that connect right after another one disconnects flaky.

    Not ``-displayfd``: it hands out :0, :1 … which other processes on a shared machine (or its
    network namespace's abstract sockets) may also be starting, so a test could reach the wrong server.
    """
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.fail("Xvfb is not installed: apt install xvfb (the README's `make test` does)")
    rng = random.Random(os.getpid())
    for _ in range(10):
        number = rng.randrange(200, 3000)
        if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
            continue
        display = f":{number}"
        proc = subprocess.Popen([binary, display, "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline and not _reachable(display):
            time.sleep(0.05)
        if proc.poll() is None and _reachable(display):
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError("could not start Xvfb on any display number")
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def display(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return xvfb


@pytest.fixture
def xdraw(display: str) -> Iterator[XDraw]:
    d = XDraw(display)
    yield d
    d.close()


def wait_for(pred, timeout: float = 10.0) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass (a source's reader runs on its own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def drain_in_thread(src, interval: float) -> tuple[list, list, threading.Thread]:
    """Sample ``src`` on a thread of its own, as a session does: (frames so far, errors, the thread)."""
    frames: list = []
    errors: list = []

    def drain() -> None:
        try:
            for f in src.sample(interval):
                frames.append(f)
        except Exception as e:  # pragma: no cover - the caller asserts there is none
            errors.append(e)

    t = threading.Thread(target=drain)
    t.start()
    return frames, errors, t
