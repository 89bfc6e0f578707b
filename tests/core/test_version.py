"""One version number, shown with where to get a newer one."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

import app
from app.cli import main
from app.core import version

REPO = Path(__file__).resolve().parents[2]


def test_the_package_and_pyproject_agree() -> None:
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == app.__version__


def test_duet_version_names_the_version_and_where_to_update(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUET_RELEASES_URL", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Duet {app.__version__} (from source")
    assert out[1] == f"Newer versions: {version.RELEASES_URL}"
    monkeypatch.setenv("DUET_RELEASES_URL", "https://example.org/duet")
    assert version.version_text().endswith("Newer versions: https://example.org/duet")
