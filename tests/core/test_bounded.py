"""Bounded reads of regular files only, and output paths that are files (real FIFOs and devices)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from app.core.bounded import UnsafeFile, bounded_lines, check_output_file, open_regular, read_regular

pytestmark = pytest.mark.timeout(30)  # a regression would block on the FIFO: fail instead of hanging


def test_a_fifo_is_refused_without_blocking(tmp_path: Path):
    os.mkfifo(tmp_path / "p")
    with pytest.raises(UnsafeFile, match="is a FIFO \\(named pipe\\), not a regular file") as e:
        open_regular(tmp_path / "p")
    assert isinstance(e.value, OSError) and isinstance(e.value, ValueError)
    assert e.value.filename == str(tmp_path / "p")


def test_devices_and_folders_are_refused(tmp_path: Path):
    (tmp_path / "z").symlink_to("/dev/zero")
    with pytest.raises(UnsafeFile, match="is a character device"):
        read_regular(tmp_path / "z", 10)
    with pytest.raises(UnsafeFile, match="is a folder"):
        read_regular(tmp_path, 10)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing", 10)


def test_a_file_over_its_bound_is_refused_and_one_at_it_is_read(tmp_path: Path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert read_regular(f, 10) == b"x" * 10
    with pytest.raises(UnsafeFile, match="is larger than 9 B"):
        read_regular(f, 9)


def test_bounded_lines_skip_an_over_long_line_and_stop_at_the_total():
    data = b"a\n" + b"x" * 50 + b"\nb\n" + b"y" * 5
    lines = list(bounded_lines(io.BytesIO(data), max_line=10, max_total=1000))
    assert lines == [b"a\n", None, b"b\n", b"yyyyy"]
    assert list(bounded_lines(io.BytesIO(data), max_line=10, max_total=3)) == [b"a\n", b"x"]


def test_output_paths_must_be_regular_files_or_new(tmp_path: Path):
    assert check_output_file(tmp_path / "new.md") == tmp_path / "new.md"
    (tmp_path / "old.md").write_text("x")
    assert check_output_file(tmp_path / "old.md") == tmp_path / "old.md"
    os.mkfifo(tmp_path / "p")
    with pytest.raises(UnsafeFile, match="--out .*/p is a FIFO"):
        check_output_file(tmp_path / "p")
    with pytest.raises(UnsafeFile, match="the export /dev/null is a character device"):
        check_output_file("/dev/null", "the export")
