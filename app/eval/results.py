"""What an evaluation run is made with (:class:`RunSettings`) and what it produced (:class:`EvalResult`).

Kept apart from :mod:`app.eval.runner` so the report can read both without importing the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.core.config import SessionConfig, default
from app.eval.dataset import Dataset
from app.eval.predictions import Prediction
from app.eval.scoring import ScoreResult


@dataclass(frozen=True)
class RunSettings:
    """What determines the predictions (besides the model), recorded in ``run.json``."""

    interval: float = default(SessionConfig, "interval")  # defaults and ranges: app.core.config
    frames_per_turn: int = default(SessionConfig, "frames_per_turn")
    tokens_per_frame: int = default(SessionConfig, "tokens_per_frame")
    max_new_tokens: int = default(SessionConfig, "max_new_tokens")
    model: str = ""  # a description of the model (file names), for the record and the resume check

    def session_config(self) -> SessionConfig:
        return SessionConfig(interval=self.interval, frames_per_turn=self.frames_per_turn,
                             tokens_per_frame=self.tokens_per_frame, talkativeness=0.0,
                             max_new_tokens=self.max_new_tokens)


@dataclass
class EvalResult:
    out_dir: Path
    dataset: Dataset
    predictions: dict[str, Prediction]
    scores: ScoreResult
    skipped: dict[str, str] = field(default_factory=dict)  # example id → why (missing video)
    files: dict[str, Path] = field(default_factory=dict)
