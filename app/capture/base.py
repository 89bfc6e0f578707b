"""The one interface every capture source implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator

from app.core.types import Frame


class CaptureError(RuntimeError):
    """A source could not be opened or read; the message says what to do about it."""


class FrameSource(abc.ABC):
    """A source of frames sampled every ``interval`` seconds of *source* time.

    ``live`` sources (camera, screen, a file played in real time) follow the wall clock: when the
    consumer is slower than real time, ticks are skipped and the newest frame is delivered with
    ``Frame.dropped`` > 0, so no backlog ever builds. Non-live sources (a file in evaluation mode)
    deliver every tick deterministically, as fast as they are consumed.
    """

    name: str = "source"
    live: bool = True

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raise CaptureError with an actionable message."""

    @abc.abstractmethod
    def sample(self, interval: float) -> Iterator[Frame]:
        """Yield one frame per ``interval`` seconds until the source ends or is closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    @property
    def status(self) -> str:
        """A short human-readable state ("playing", "camera lost, retrying…")."""
        return "ok"

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
