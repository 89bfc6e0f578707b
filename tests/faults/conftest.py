"""Helpers for the fault catalogue: run the real ``duet`` CLI in-process and build damaged inputs."""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli import main as duet


@dataclass
class Outcome:
    rc: int
    out: str
    err: str  # stderr, plus every log record (the CLI's warnings reach the user through logging)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty user data folder (models/, sessions/) and config folder, never the real ones."""
    d = tmp_path / "data"
    monkeypatch.setenv("DUET_DATA_DIR", str(d))
    monkeypatch.setenv("DUET_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("DUET_SERVE_API_KEY", raising=False)
    return d


@pytest.fixture
def run(capsys, caplog) -> Callable[..., Outcome]:
    def go(*argv: str) -> Outcome:
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            try:
                rc = duet([str(a) for a in argv])
            except SystemExit as e:  # argparse refused a flag (its range comes from the settings field): exit 2
                rc = e.code if isinstance(e.code, int) else 1
        cap = capsys.readouterr()
        logs = "\n".join(r.getMessage() for r in caplog.records)
        assert "Traceback" not in cap.err + cap.out
        return Outcome(rc, cap.out, cap.err + "\n" + logs)

    return go


@pytest.fixture
def hf_copy(tiny_model, tmp_path) -> Path:
    d = tmp_path / "hf"
    shutil.copytree(tiny_model.hf_dir, d)
    return d


def rewrite_safetensors_header(path: Path, edit: Callable[[dict], object]) -> None:
    """Change a safetensors file's JSON header in place (the data after it is kept)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header = edit(header) or header
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
