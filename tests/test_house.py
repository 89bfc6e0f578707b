"""House rules that a reader relies on, checked: small modules (a newcomer reads one in minutes)."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
MAX_LINES = 450


def test_no_module_is_over_450_lines() -> None:
    long = {str(p.relative_to(APP)): n for p in sorted(APP.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by what they hold (at most {MAX_LINES} lines): {long}"
