"""What a training dialogue is made of (turns of frames, user text and a target), and reading a video's turns.

Shared by the dialogues built from datasets (:mod:`app.trainer.data`), from saved sessions
(:mod:`app.trainer.session_dialogues`) and their encoding (:mod:`app.trainer.encode`). The frames
are read exactly as the evaluation runner feeds them (docs/protocol.md §1): a training dialogue is
byte for byte what the model sees at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core import protocol
from app.core.errors import InputError


class DataError(InputError):
    """Training data is unusable; the message names the file, record and field (or the video)."""


@dataclass
class TurnFrames:
    time: float  # video time after this turn's frames
    images: list[np.ndarray]


@dataclass
class DialogueTurn:
    time: float
    images: list[np.ndarray]
    user_text: str = ""
    target: str = protocol.NO_REPLY
    train: bool = True


@dataclass
class Dialogue:
    id: str
    turns: list[DialogueTurn]
    system: str = protocol.SYSTEM_PROMPT
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_replies(self) -> int:
        return sum(1 for t in self.turns if t.target != protocol.NO_REPLY)


def read_turn_frames(video: Path, interval: float, frames_per_turn: int, tokens_per_frame: int,
                     where: str = "") -> list[TurnFrames]:
    """The user turns' frames of one video, exactly as the evaluation runner feeds them."""
    from app.capture.base import CaptureError
    from app.capture.resize import fit_frame
    from app.eval.runner import video_source

    if not Path(video).is_file():
        raise DataError(f"{where}field 'video': file not found: {video}")
    turns: list[TurnFrames] = []
    pending: list[np.ndarray] = []
    try:
        with video_source(Path(video)) as src:
            for fr in src.sample(interval):
                pending.append(fit_frame(fr.image, tokens_per_frame))
                if len(pending) == frames_per_turn:
                    turns.append(TurnFrames(round(fr.time, 6), pending))
                    pending = []
    except (CaptureError, OSError, ValueError) as e:
        raise DataError(f"{where}field 'video': cannot read {video}: {e}") from e
    if not turns:
        raise DataError(f"{where}field 'video': {video} yields no complete turn "
                        f"({frames_per_turn} frames at {interval} s)")
    return turns
