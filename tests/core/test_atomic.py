"""Appends to a JSON-lines log: whole or not at all, and never glued onto a torn last line."""

from __future__ import annotations

import os
from pathlib import Path

from app.core.atomic import append_whole


def _append(path: Path, data: bytes, **kw) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        append_whole(fd, data, **kw)
    finally:
        os.close(fd)


def test_fresh_line_starts_a_new_line_after_a_torn_record(tmp_path: Path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"a": 1}\n{"b": ')  # cut mid-record
    _append(log, b'{"c": 3}\n', fresh_line=True)
    assert log.read_bytes() == b'{"a": 1}\n{"b": \n{"c": 3}\n'
    _append(log, b'{"d": 4}\n', fresh_line=True)  # after a whole line: nothing added
    assert log.read_bytes().endswith(b'{"c": 3}\n{"d": 4}\n')


def test_fresh_line_on_an_empty_or_new_file_adds_nothing(tmp_path: Path):
    log = tmp_path / "new.jsonl"
    _append(log, b"x\n", fresh_line=True)
    assert log.read_bytes() == b"x\n"
