"""Issue 26 item 6: the Windows tab says what is really missing, not "needs X11" on an X11 display.

Window capture lists windows through libX11 and needs no window manager; the private Xvfb here runs none,
and no other program, so the list is empty for the reason the tab must give."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.ui.source_picker import SourcePicker

from .test_capture_exclusion_x11 import REPO, private_display  # noqa: F401 - the Xvfb fixture


def test_on_x11_without_a_window_manager_the_tab_says_no_other_window_is_open(private_display: str) -> None:  # noqa: F811
    env = {**os.environ, "DISPLAY": private_display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO)}
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run([sys.executable, "-m", "tests.ui.windows_tab_child"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    said = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert said["offered"] == "0"
    assert said["message"].startswith("No other window is open on this display"), said["message"]
    assert "needs X11" not in said["message"] and "open the window to watch" in said["message"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux/X11 wording")
def test_without_a_display_the_tab_names_the_missing_display(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # a Wayland session without XWayland, or no desktop at all
    picker = SourcePicker("screen")
    qtbot.addWidget(picker)
    assert picker.windows.count() == 0
    assert picker.window_message.text().startswith("Window capture needs an X11 display, and $DISPLAY is not set")
