"""Format versions of the files Duet writes, and the hook that migrates old ones forward.

Every settings file (``format = N`` at the top of settings.toml) and every saved session
(``"format": N`` in meta.json) says which layout it uses. On reading:

* an **older** file (a missing key counts as 0, the layout before versioning) is brought up step by
  step through :data:`MIGRATIONS` (``from_version → function``); the caller keeps a copy of the
  original before it writes the new layout, so an upgrade never loses what the user had;
* a **newer** file, written by a later Duet, is read field by field for what this version knows
  and is never overwritten without first copying it aside (``...from-v<N>...``): going back to
  the older app loses nothing.

Why a hand-written hook instead of a migration library: the files are small dicts, the steps are
pure functions, and the core must stay dependency-light. To change a layout, bump the constant and
register the step ``MIGRATIONS[kind][old] = fn`` with a test that feeds it an old file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

SETTINGS_FORMAT = 1
SESSION_FORMAT = 1
CURRENT = {"settings": SETTINGS_FORMAT, "session": SESSION_FORMAT}
KEY = "format"


def _stamp_only(data: dict) -> dict:
    """0 → 1: the layout did not change when versioning began; only the stamp is new."""
    return data


MIGRATIONS: dict[str, dict[int, Callable[[dict], dict]]] = {
    "settings": {0: _stamp_only},
    "session": {0: _stamp_only},
}


@dataclass(frozen=True)
class Upgraded:
    data: dict  # in the current layout (or as read, when newer)
    found: int  # the version the file carried
    current: int  # the version this Duet writes

    @property
    def migrated(self) -> bool:
        return self.found < self.current

    @property
    def newer(self) -> bool:
        """Written by a later Duet: read what we know, never overwrite it without a copy aside."""
        return self.found > self.current


def file_version(data: dict) -> int:
    v = data.get(KEY, 0)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def upgrade(kind: str, data: dict, *, current: int | None = None,
            migrations: dict[int, Callable[[dict], dict]] | None = None) -> Upgraded:
    """``data`` brought to the current format of ``kind``; the input is not modified."""
    target = CURRENT[kind] if current is None else current
    steps = MIGRATIONS[kind] if migrations is None else migrations
    found = file_version(data)
    out = copy.deepcopy(data)
    v = found
    while v < target:
        step = steps.get(v)
        if step is None:
            raise ValueError(f"{kind}: no migration from format {v} to {v + 1}")
        out = step(out)
        v += 1
        out[KEY] = v
    return Upgraded(out, found, target)
