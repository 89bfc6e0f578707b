"""What a session reports: its :class:`State` and the typed events a listener receives.

Kept apart from :mod:`app.engine.controller` (which emits them) so a listener — the GUI's worker,
``duet run``, a test — can import the vocabulary alone.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from app.capture.base import SourceHealth
from app.core.types import Frame, StepResult


class State(str, enum.Enum):
    """Where a session is. A ``str`` enum, so ``state == "idle"`` reads naturally in tests and logs."""

    IDLE = "idle"
    LOADING = "loading"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"


class EndReason(str, enum.Enum):
    """Why a session ended: :class:`Finished`'s reason, what ``SessionController.run`` returns, and the
    ``reason`` a saved session's ``end`` record keeps (its value). A ``str`` enum, like :class:`State`."""

    ENDED = "ended"  # the source ended by itself (a file's end)
    STOPPED = "stopped"  # the user (or a closing window) stopped it
    ERROR = "error"  # a failure ended it; a Failed event said which
    MAX_TURNS = "max turns"  # SessionConfig.max_turns reached

    def __str__(self) -> str:  # the value in messages and f-strings, on every Python version
        return self.value


# ---- events (each a small frozen dataclass; the listener branches on the type) -----------------
@dataclass(frozen=True)
class StateChanged:
    state: State


@dataclass(frozen=True)
class Loading:
    what: str  # "Loading model demo…", "Opening file:vtest.avi…"


@dataclass(frozen=True)
class Started:
    device: str
    source_name: str


@dataclass(frozen=True)
class FrameSampled:
    frame: Frame  # for a preview; every sampled frame, before the model sees it


@dataclass(frozen=True)
class StepDone:
    result: StepResult


@dataclass(frozen=True)
class Gap:
    """A live source was paused: ``seconds`` of the world were not watched before ``video_time``."""

    video_time: float
    seconds: float
    frames_dropped: int  # frames of the unfinished turn thrown away


@dataclass(frozen=True)
class HealthChanged:
    health: SourceHealth
    detail: str  # the source's own words ("camera lost, retrying…")
    source_name: str


@dataclass(frozen=True)
class Problem:
    """Something went wrong that does not end the session (the transcript could not be written)."""

    message: str


@dataclass(frozen=True)
class Failed:
    """The session ends because of this; the message is written for the user."""

    message: str


@dataclass(frozen=True)
class Finished:
    reason: EndReason


Event = StateChanged | Loading | Started | FrameSampled | StepDone | Gap | HealthChanged | Problem | Failed | Finished
Listener = Callable[[Event], None]
