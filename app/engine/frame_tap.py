"""The tap between a session's source and its model: every frame passes it on the session's loop thread.

:class:`FrameTap` wraps the real :class:`~app.capture.base.FrameSource` that
:class:`~app.engine.session.ProactiveSession` reads. It holds the loop while the user pauses, drops a
live source's frame taken before a pause, checks the source's health, and reports each frame it lets
through. It is given what it needs as functions (the controller's), so it reads none of the
controller's state itself: the controller stays the one owner of its lock and fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from app.capture.base import FrameSource
from app.core.types import Frame

log = logging.getLogger("duet.controller")


class FrameTap(FrameSource):
    """Wraps the real source: reports each frame and its health, holds the loop while paused."""

    def __init__(self, inner: FrameSource, *, stopping: Callable[[], bool], hold: Callable[[], bool],
                 check_health: Callable[[], object], passed: Callable[[Frame], None]) -> None:
        """``stopping``: the user asked the session to end. ``hold``: blocks while paused, True when the frame
        in hand is stale (a live source's, from before the pause). ``check_health``: reads the source's health
        and reports a change. ``passed``: a frame goes to the model now (the preview, the stream's clock)."""
        self.inner = inner
        self.name = inner.name
        self.live = inner.live
        self._stopping, self._hold, self._check_health, self._passed = stopping, hold, check_health, passed

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def sample(self, interval: float) -> Iterator[Frame]:
        for frame in self.inner.sample(interval):
            if self._stopping():
                return
            if self._hold():
                continue  # a live source's frame from before the pause: stale
            if self._stopping():
                return
            self._check_health()
            self._passed(frame)
            yield frame
        if not self._stopping():  # the source ended by itself (a file's end); a stop closing it is no health news
            self._check_health()


def close_quietly(source: FrameSource) -> None:
    """Close a session's source (from a helper thread at a stop, or at the end): a failure there is logged, never
    raised, since the session it belonged to is over either way."""
    try:
        source.close()
    except Exception:
        log.exception("closing the source failed")
