"""Under a real X server: the overlay starts above the main window, and is never offered as a source."""

from __future__ import annotations

import os
import subprocess
import sys

from .test_capture_exclusion_x11 import REPO, private_display  # noqa: F401 - the Xvfb fixture


def test_overlay_on_top_and_not_offered(private_display: str, tmp_path) -> None:  # noqa: F811
    env = {**os.environ, "DISPLAY": private_display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO),
           "DUET_DATA_DIR": str(tmp_path / "data")}
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run([sys.executable, "-m", "tests.ui.stacking_child"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line}
    i_main, i_overlay = map(int, lines["order"].split())
    assert i_overlay > i_main, "the overlay sits above the main window after a (re)start"
    offered = lines["offered"].split("|")
    assert "Some editor" in offered, "other windows are offered (sanity check of the test itself)"
    assert not any(t.startswith("Duet") for t in offered), offered
