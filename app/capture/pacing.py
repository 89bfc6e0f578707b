"""Wall-clock pacing shared by the live sources: one tick every ``interval`` seconds, never a backlog.

A live source must not queue frames while the model is busy: when the consumer comes back late it
gets the *newest* tick and is told how many it missed (``Frame.dropped``), so the session's notion of
"now" never falls behind the world. Keeping the arithmetic here lets camera, screen and a video
played in real time agree on what a tick index means (tick k ≈ k·interval seconds after start).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    index: int  # 1-based: tick k is due k·interval seconds after the clock started
    dropped: int  # ticks between the previous delivered tick and this one
    interval: float

    @property
    def time(self) -> float:
        return self.index * self.interval


class TickClock:
    """Hands out wall-clock ticks; a late caller skips straight to the latest due tick.

    ``pause()``/``resume()`` stop and restart the clock itself: a source whose time is its own (a
    video file played in real time) holds still while the user pauses, so resuming continues from
    the same moment instead of jumping ahead by the length of the pause.
    """

    def __init__(self, interval: float, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.interval = interval
        self._stop = stop
        self._clock = clock
        self._start: float | None = None
        self._last = 0
        self._lock = threading.Lock()
        self._paused_at: float | None = None  # wall time the clock stopped at; None = running
        self._resumed = threading.Event()
        self._resumed.set()

    # ---- pausing (any thread) -----------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            if self._paused_at is None:
                self._paused_at = self._clock()
                self._resumed.clear()

    def resume(self) -> None:
        with self._lock:
            if self._paused_at is not None:
                if self._start is not None:
                    self._start += self._clock() - self._paused_at
                self._paused_at = None
                self._resumed.set()

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    @property
    def elapsed(self) -> float:
        """Seconds the clock has run since its first tick was asked for (0 before): what a video played on
        this clock is showing now. It runs with the wall clock and stands still while paused, so a time
        shown from it moves smoothly, unlike the ticks, which a late consumer takes in jumps."""
        with self._lock:
            if self._start is None:
                return 0.0
            now = self._paused_at if self._paused_at is not None else self._clock()
            return max(0.0, now - self._start)

    def _now(self) -> float:
        """The clock's reading: it stands still while paused."""
        with self._lock:
            return self._paused_at if self._paused_at is not None else self._clock()

    # ---- ticks (the consumer's thread) --------------------------------------------------------
    def _due(self, now: float) -> int:
        assert self._start is not None
        # The epsilon absorbs float error right at a tick boundary (now == start + k·interval).
        return math.floor((now - self._start) / self.interval + 1e-9)

    def next(self) -> Tick | None:
        """Wait for the next tick (or return the latest one at once if it is already late); None when stopped."""
        if self._start is None:
            self._start = self._now()
        while True:
            if self._stop.is_set():
                return None
            if self.paused:  # wake now and then to notice stop()
                self._resumed.wait(0.1)
                continue
            wait = self._start + (self._last + 1) * self.interval - self._now()
            if wait <= 0:
                break
            # Short naps so a pause that starts meanwhile is honoured before the tick is handed out.
            if self._stop.wait(min(wait, 0.05)):
                return None
        index = max(self._last + 1, self._due(self._now()))
        tick = Tick(index, index - self._last - 1, self.interval)
        self._last = index
        return tick

    def catch_up(self, tick: Tick) -> Tick:
        """Move an already-claimed tick forward to the newest due one (after waiting on a slow device)."""
        index = max(tick.index, self._due(self._now()))
        if index == tick.index:
            return tick
        self._last = index
        return Tick(index, tick.dropped + index - tick.index, self.interval)
