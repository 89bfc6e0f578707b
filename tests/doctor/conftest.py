"""Every doctor test resolves ``demo`` as a fresh install does (the bundled model), never in the user's library."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _fresh_user_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("DUET_ASSETS_DIR", raising=False)
    monkeypatch.delenv("DUET_CPU_VARIANT", raising=False)
