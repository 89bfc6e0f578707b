"""Fault catalogue, part 6: the desktop window on a real full disk.

The cases live in ``disk_full_gui_child.py`` (pytest-qt, the real MainWindow offscreen); they run
in a child pytest inside a private mount namespace whose tmpfs of 512 KiB holds the window's
settings, sessions and exports, so every ENOSPC is the kernel's. Each case asserts the banner's
exact words, that earlier files are byte for byte as they were, and that no temporary is left;
pytest-qt fails a case on any exception raised in a Qt slot, so "no traceback" is checked too.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from .test_disk_full import REPO, run_on_tiny_fs

CASES = 6


def test_the_window_on_a_full_disk(tmp_path):
    env = {"DUET_TINY_FS": str(tmp_path / "fs"), "QT_QPA_PLATFORM": "offscreen",
           "DUET_CACHE_DIR": os.environ.get("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))}
    proc = run_on_tiny_fs(tmp_path, 512, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                          "--basetemp", str(tmp_path / "child"),
                                          "tests/faults/disk_full_gui_child.py"], env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "mount" in proc.stderr and "passed" not in out:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, out[-6000:]
    assert re.search(rf"\b{CASES} passed\b", out) and "skipped" not in out, out[-3000:]
