"""What a pull takes from a repository, the pulls left unfinished, and the download rate it reports.

Kept apart from :mod:`app.modelhub.pull` (the job and its stages) so each stays short: these are the
job's pure helpers and the one reader of other pulls' state files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.bounded import read_regular_text
from app.modelhub.hub import RemoteFile

if TYPE_CHECKING:
    from app.modelhub.library import ModelLibrary

STATE_MAX_BYTES = 16 * 2**20  # a state file holds a listing of a few hundred names; more is not one


class Rate:
    """Bytes per second over a sliding window of a few seconds, and the ETA it implies.

    ``start`` is where the count stood when the transfer began: with it, the very first report
    already has a rate (and so an ETA), instead of the second one — at 40 KB/s the difference
    between a figure within two seconds and one after several.
    """

    def __init__(self, window: float = 5.0, start: int | None = None) -> None:
        self.window = window
        self.samples: list[tuple[float, int]] = [] if start is None else [(time.monotonic(), start)]

    def add(self, done: int) -> float:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.pop(0)
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0


def gguf_pair(files: tuple[RemoteFile, ...], quant: str) -> tuple[RemoteFile, RemoteFile] | None:
    """The model file for ``quant`` and the mmproj of a repository of ready GGUFs, if it is one."""
    from app.modelhub.pull import PullError

    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    mmprojs = [f for f in ggufs if "mmproj" in Path(f.name).name.lower()]
    models = [f for f in ggufs if f not in mmprojs]
    if not models or not mmprojs:
        return None
    q = quant.lower()
    match = [f for f in models if q in f.name.lower().replace("-", "_")]
    if not match and quant == "F16":
        match = [f for f in models if "f16" in f.name.lower() or "bf16" in f.name.lower()]
    if not match and len(models) == 1:
        match = models
    if not match:
        names = ", ".join(Path(f.name).name for f in models)
        raise PullError(f"the repository has no {quant} model file (it has: {names}); choose one with --quant")
    mm = sorted(mmprojs, key=lambda f: ("f16" not in f.name.lower(), f.size))[0]
    return match[0], mm


def remove_partials(folder: Path) -> None:
    """Temporary files of a writer that was killed (``.<name>.partial-<pid>``): a pull's own folder, locked."""
    if folder.is_dir():
        for p in folder.glob(".*.partial*"):
            p.unlink(missing_ok=True)


def pending_pulls(library: ModelLibrary | None = None) -> list[dict]:
    """Interrupted pulls (their state files), for the Models page and ``duet models pull`` to offer resuming."""
    from app.modelhub.library import ModelLibrary

    lib = library or ModelLibrary()
    out = []
    for p in sorted((lib.root / ".pulls").glob("*/state.json")):
        try:
            s = json.loads(read_regular_text(p, STATE_MAX_BYTES))  # a FIFO or a huge file: skipped unread
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue
        if isinstance(s, dict) and not s.get("imported") and s.get("repo"):
            req = s.get("request") or {}
            out.append({"repo": s["repo"], "revision": s.get("revision", "main"), "quant": req.get("quant", "Q4_K_M"),
                        "name": req.get("name"), "work": str(p.parent)})
    return out
