"""Byte counts for people: decimal units, MB for a tiny model, two decimals in GB."""

from __future__ import annotations

import pytest

from app.core.sizes import human_bytes


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (999, "999 B"), (1500, "1.5 KB"), (12_345_678, "12.3 MB"), (999_949_999, "999.9 MB"),
    (1_950_000_000, "1.95 GB"), (3_400_000_000_000, "3400.00 GB"),
])
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
