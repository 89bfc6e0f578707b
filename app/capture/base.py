"""The one interface every capture source implements."""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator

from app.core.errors import ResourceError
from app.core.types import Frame


class CaptureError(ResourceError):
    """A source could not be opened or read; the message says what to do about it."""


class SourceHealth(str, enum.Enum):
    """What a source is doing, as a type the controller and GUI can branch on (never a substring)."""

    OK = "ok"  # delivering frames (or ready to)
    LOST = "lost"  # the device went away; the source retries on its own
    HIDDEN = "hidden"  # a followed window is minimised or closed; ticks count as dropped
    ENDED = "ended"  # a file reached its end
    CLOSED = "closed"


class FrameSource(abc.ABC):
    """A source of frames sampled every ``interval`` seconds of *source* time.

    ``live`` sources (camera, screen, a file played in real time) follow the wall clock: when the
    consumer is slower than real time, ticks are skipped and the newest frame is delivered with
    ``Frame.dropped`` > 0, so no backlog ever builds. Non-live sources (a file in evaluation mode)
    deliver every tick deterministically, as fast as they are consumed.
    """

    name: str = "source"
    live: bool = True
    _status: str = "ok"  # what :attr:`status` says; "closed" once closed

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
        return self._status

    @property
    def health(self) -> SourceHealth:
        """The state as a type; ``status`` is the words for it."""
        return SourceHealth.CLOSED if self._status == "closed" else SourceHealth.OK

    def pause(self) -> bool:
        """Hold the source's own clock while the consumer pauses; True when it can.

        A source whose time is its own (a video file) returns True and resumes from the same
        moment. A live source (camera, screen) cannot stop the world and returns False: the
        consumer must then treat the pause as a gap in the stream.
        """
        return not self.live

    def resume(self) -> None:  # noqa: B027 - deliberately empty: a live source has no clock to restart
        """Restart the clock held by :meth:`pause` (nothing to do for live sources)."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
