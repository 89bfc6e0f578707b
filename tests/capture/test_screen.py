"""ScreenSource against a real X server (Xvfb) with known pictures drawn through libX11."""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy as np
import pytest

from app.capture.base import CaptureError
from app.capture.screen import ScreenSource, list_monitors
from app.capture.x11windows import find_window, list_windows

from .conftest import drain_in_thread, wait_for
from .xdraw import XDraw, rgb_of

BLUE = 0x3366CC
MAGENTA = 0xC81E50


def test_list_monitors_reports_the_xvfb_screen(display):
    mons = list_monitors()
    assert [(m.index, m.width, m.height) for m in mons[:2]] == [(0, 640, 480), (1, 640, 480)]
    assert "640×480" in str(mons[1])


def test_monitor_grab_is_rgb_of_what_is_on_screen(xdraw: XDraw):
    xdraw.paint_root(BLUE)
    src = ScreenSource(1)
    src.open()
    try:
        frames = [f for _, f in zip(range(2), src.sample(0.02), strict=False)]
    finally:
        src.close()
    assert len(frames) == 2 and frames[1].index > frames[0].index
    for f in frames:
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        assert f.image.flags["C_CONTIGUOUS"]
        assert (f.image.reshape(-1, 3) == rgb_of(BLUE)).all()  # RGB, not mss's BGRA
    assert src.status == "closed"


def test_region_is_clipped_to_the_screen_and_rejected_when_outside(xdraw: XDraw):
    xdraw.paint_root(BLUE)
    with ScreenSource(region=(10, 20, 100, 60)) as src:
        assert src.grab().shape == (60, 100, 3)
    with ScreenSource(region=(600, 440, 100, 100)) as src:
        assert src.grab().shape == (40, 40, 3)
    with pytest.raises(CaptureError, match="outside the screen"):
        ScreenSource(region=(700, 10, 50, 50)).open()


def test_window_by_title_captures_its_rectangle_and_waits_while_hidden(xdraw: XDraw):
    xdraw.paint_root(BLUE)
    win = xdraw.window("Duet test window", 100, 50, 200, 120, MAGENTA)
    assert find_window("duet TEST") is not None  # case-insensitive substring
    src = ScreenSource(window="Duet test window")
    src.open()
    frames, errors, t = drain_in_thread(src, 0.03)
    try:
        assert wait_for(lambda: len(frames) >= 2)
        xdraw.unmap(win)
        assert wait_for(lambda: "not visible" in src.status)
        seen = len(frames)
        time.sleep(0.2)  # several ticks pass with the window hidden
        xdraw.map(win)
        assert wait_for(lambda: len(frames) >= seen + 2)
    finally:
        src.close()
        t.join(10)
    assert not errors and not t.is_alive()
    f0 = frames[0]
    assert f0.image.shape == (120, 200, 3)
    assert (f0.image.reshape(-1, 3) == rgb_of(MAGENTA)).all()
    assert frames[seen].dropped >= 1  # the ticks spent hidden are reported, not silently lost
    assert all(b.index == a.index + 1 + b.dropped for a, b in zip(frames, frames[1:], strict=False))


def test_missing_window_lists_what_is_there(xdraw: XDraw):
    xdraw.window("Some other window", 0, 0, 50, 50, MAGENTA)
    with pytest.raises(CaptureError, match="No visible window titled 'no such thing'.*Some other window"):
        ScreenSource(window="no such thing").open()


class Overlay:
    """Stands in for Duet's overlay: a real window the hook unmaps for the grab and maps again."""

    def __init__(self, xdraw: XDraw, win: int) -> None:
        self.xdraw, self.win, self.calls = xdraw, win, []

    def hide(self) -> None:
        self.calls.append("hide")
        self.xdraw.unmap(self.win)

    def restore(self) -> None:
        self.calls.append("restore")
        self.xdraw.map(self.win)


def test_exclude_hook_keeps_the_overlay_out_of_the_grab(xdraw: XDraw):
    xdraw.paint_root(BLUE)
    win = xdraw.window("Duet overlay", 0, 0, 640, 480, MAGENTA)
    with ScreenSource(1) as plain:
        assert (plain.grab()[240, 320] == rgb_of(MAGENTA)).all()  # without the hook it is captured
    overlay = Overlay(xdraw, win)
    with ScreenSource(1, exclude=overlay) as src:
        frames = [f for _, f in zip(range(2), src.sample(0.02), strict=False)]
    assert all((f.image.reshape(-1, 3) == rgb_of(BLUE)).all() for f in frames)
    assert overlay.calls[-4:] == ["hide", "restore"] * 2
    assert any(w.title == "Duet overlay" for w in list_windows())  # restored after the grab


def test_exclude_hook_as_context_manager_factory_wraps_each_grab(display):
    entered: list[str] = []

    @contextlib.contextmanager
    def hook():
        entered.append("in")
        yield
        entered.append("out")

    with ScreenSource(region=(0, 0, 32, 32), exclude=hook) as src:
        n_open = len(entered)
        src.grab()
        src.grab()
    assert entered[n_open:] == ["in", "out", "in", "out"]


def test_slow_consumer_gets_newest_tick_and_drop_count(display):
    interval = 0.02
    with ScreenSource(region=(0, 0, 64, 64)) as src:
        it = src.sample(interval)
        first = next(it)
        t_first = time.monotonic()
        prev = first
        for _ in range(3):
            time.sleep(3 * interval)
            asked = time.monotonic()
            f = next(it)
            assert f.dropped >= 2
            assert f.index == prev.index + 1 + f.dropped
            # newest, not the next in a queue: at least the tick that was due when we asked
            assert f.index >= 1 + math.floor((asked - t_first) / interval)
            prev = f


def test_bad_monitor_index_lists_monitors(display):
    with pytest.raises(CaptureError, match=r"No monitor 5: available are screen:0 640×480"):
        ScreenSource(5).open()


def test_no_display_says_so(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(CaptureError, match=r"No display to capture: \$DISPLAY is not set"):
        ScreenSource().open()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(CaptureError, match="Wayland session without XWayland"):
        list_monitors()


def test_unreachable_display_is_a_capture_error(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":4093")
    with pytest.raises(CaptureError, match="Cannot connect to display ':4093'"):
        ScreenSource().open()


def test_close_is_idempotent_and_ends_sampling(display):
    src = ScreenSource(region=(0, 0, 16, 16))
    src.open()
    it = src.sample(5.0)
    threading.Timer(0.1, src.close).start()
    assert list(it) == []
    src.close()
    assert src.status == "closed"
