"""Temporary files left by a writer that was killed: ``.<name>.partial-<pid>`` beside ``<name>``.

Why: the converter, the quantizer and the GGUF writer write each output under a temporary sibling
named after their process and rename it into place when it is whole, so a kill never leaves half a
model under the real name; but it does leave the temporary, as large as the model was when the kill
came (tens of MB to GBs), and nothing else would ever remove it. The next run removes those of
processes that are gone; one whose process still runs (a conversion in another terminal) is kept.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>\d+)")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive: it is not ours to judge)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove ``.<target name>.partial-<pid>`` beside ``target`` for every ``pid`` no longer running.

    Returns what was removed. Only temporaries of this exact name are touched: another output in the
    same folder, and any temporary of a live process, stay.
    """
    removed = []
    folder = target.parent
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".{glob_escape(target.name)}.partial-*"):
        m = _PARTIAL.fullmatch(p.name)
        if m is None or m["name"] != target.name or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)
