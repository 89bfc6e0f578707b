"""Model predictions on disk: one JSON line per example, appended as each example finishes.

The line keeps MMDuet2's reference driver shape (``question_id`` + ``model_response_list`` of
assistant turns with ``content`` and ``time``, silent turns left out) so the file can also be fed to
the reference scripts, plus Duet's own bookkeeping (turn count, errors, timings).

Appending one flushed line per finished example is what makes ``duet eval`` resumable: after an
interruption the finished examples are read back and skipped; a torn last line is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.atomic import append_whole


@dataclass
class Prediction:
    id: str
    replies: list[tuple[float, str]]  # (video time, text) of every non-silent assistant turn
    n_turns: int = 0  # assistant turns, silent ones included
    error: str | None = None  # why the example could not be run to the end
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "question_id": self.id,
            "model_response_list": [{"role": "assistant", "content": t, "time": tm} for tm, t in self.replies],
            "n_turns": self.n_turns,
            "error": self.error,
            **({"meta": self.meta} if self.meta else {}),
        }

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Prediction:
        replies = [
            (float(r["time"]), str(r["content"]))
            for r in rec.get("model_response_list", [])
            if r.get("role", "assistant") == "assistant"
        ]
        return cls(str(rec["question_id"]), replies, int(rec.get("n_turns", 0)), rec.get("error"),
                   dict(rec.get("meta") or {}))


def read_predictions(path: str | os.PathLike[str]) -> dict[str, Prediction]:
    """Predictions by example id; the last line for an id wins; a torn or foreign line is skipped."""
    p = Path(path)
    out: dict[str, Prediction] = {}
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            pred = Prediction.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue  # an interrupted write leaves a partial last line; it is rerun
        out[pred.id] = pred
    return out


def append_prediction(path: str | os.PathLike[str], pred: Prediction) -> None:
    """Append one line and fsync, so a crash right after cannot lose a finished example."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(pred.to_json(), ensure_ascii=False) + "\n").encode()
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:  # after a torn last line (a kill mid-write) this one starts a fresh line, so it is not lost with it
        append_whole(fd, data, fsync=True, fresh_line=True)
    finally:
        os.close(fd)

