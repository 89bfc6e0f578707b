"""How a failed write reads in the window (``describe_write_failure``), from real OS errors."""

from __future__ import annotations

import errno
import os

import pytest

from app.core.atomic import write_text_atomic
from app.core.errors import describe_write_failure


def test_a_full_disk_is_named_with_the_file_and_what_was_kept():
    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/settings.toml")
    assert describe_write_failure(e, "Settings could not be saved", "the settings saved before are kept") == (
        "Settings could not be saved: the disk is full (writing /data/settings.toml). Free some space; "
        "the settings saved before are kept.")
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert describe_write_failure(quota, "X", "y") == "X: the disk is full. Free some space; y."


def test_another_os_error_gives_its_own_reason(tmp_path):
    (tmp_path / "config").write_text("a file where the settings folder should be")
    with pytest.raises(OSError) as e:
        write_text_atomic(tmp_path / "config" / "settings.toml", "x")
    assert describe_write_failure(e.value, "Settings could not be saved", "the settings saved before are kept") == (
        f"Settings could not be saved: File exists (writing {tmp_path / 'config'}); the settings saved before "
        "are kept.")


def test_an_os_error_without_a_file_or_errno_still_reads():
    e = OSError(errno.EIO, os.strerror(errno.EIO))
    assert describe_write_failure(e, "The export could not be written", "try again") == (
        f"The export could not be written: {os.strerror(errno.EIO)}; try again.")
