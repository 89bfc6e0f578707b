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


def test_describe_is_the_one_wording_for_every_kind_of_failure():
    """The CLI, the window and the server say a failure the same way (issue: one error story)."""
    import sqlite3

    from app.core.errors import InputError, describe

    assert describe(InputError("--at must be within the video (0–8 s)")) == "--at must be within the video (0–8 s)"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.gguf")
    assert describe(full) == ("the disk is full (writing /data/x.gguf). Free some space and try again "
                              "(what was saved before is kept)")
    assert "[Errno" not in describe(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert describe(sqlite3.OperationalError("database or disk is full")).startswith("the disk is full.")
    missing = OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/nope")
    assert describe(missing) == f"/nope: {os.strerror(errno.ENOENT)}"
    assert describe(KeyError("x")) == "Unexpected error: KeyError: 'x'"


def test_a_full_disk_reads_the_same_in_a_write_failure_and_in_describe():
    from app.core.errors import describe

    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/d/f")
    core = "the disk is full (writing /d/f). Free some space"
    assert core in describe(e) and core in describe_write_failure(e, "X", "y")
