"""`duet doctor`: one line a check, each problem with its fix, exit status 1 exactly when a check failed."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from app.doctor.probe import FAULT_ENV


@pytest.fixture(autouse=True)
def _fresh_user_folders(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``demo`` as a fresh install resolves it: the bundled model, never the user's library."""
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DUET_CPU_VARIANT", raising=False)


def test_doctor_prints_a_line_a_check_and_exits_by_the_failures(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["doctor", "--quick"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if not ln.startswith("  fix: ")]
    assert [ln.split(":", 1)[0][2:] for ln in lines] == [
        "CPU", "GPU", "Demo model", "Spoken replies", "Camera", "Screen capture"]
    assert all(ln[0] in "✓✗–" for ln in lines)
    assert lines[0].startswith("✓ CPU: ") and "one step not run (--quick)" in lines[2]
    assert rc == (1 if any(ln.startswith("✗") for ln in lines) else 0)


def test_a_crashed_probe_fails_the_run_with_the_signal_and_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(FAULT_ENV, "SIGILL")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out.splitlines()
    cpu = next(i for i, ln in enumerate(out) if ln.startswith("✗ CPU: "))
    assert "SIGILL" in out[cpu] and "instruction this CPU lacks" in out[cpu]
    assert out[cpu + 1].startswith("  fix: ") and "make venv" in out[cpu + 1]


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["doctor", "--json"])
    checks = json.loads(capsys.readouterr().out)
    assert [set(c) for c in checks] == [{"name", "ok", "detail", "fix"}] * 6
    step = next(c for c in checks if c["name"] == "Demo model")
    assert step["ok"] is True and "ms" in step["detail"]
    assert rc == (1 if any(c["ok"] is False for c in checks) else 0)
