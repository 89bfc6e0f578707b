"""The tick clock: late callers skip to the newest tick; a paused clock stands still."""

from __future__ import annotations

import threading

from app.capture.pacing import TickClock


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _clock(interval: float = 1.0) -> tuple[TickClock, FakeTime]:
    t = FakeTime()
    return TickClock(interval, threading.Event(), clock=t), t


def test_a_late_caller_gets_the_newest_tick_and_the_count_it_missed() -> None:
    c, t = _clock()
    c._start = t.now
    t.now += 1.0
    tick = c.next()
    assert (tick.index, tick.dropped) == (1, 0)  # on time: nothing missed
    t.now += 3.5  # three ticks late
    tick = c.next()
    assert (tick.index, tick.dropped, tick.time) == (4, 2, 4.0)


def test_a_paused_clock_stands_still_and_resumes_from_the_same_moment() -> None:
    c, t = _clock()
    c._start = t.now
    t.now += 1.0
    assert c.next().index == 1
    t.now += 0.5
    c.pause()
    t.now += 30.0  # a long pause
    c.resume()
    t.now += 0.5  # the remaining half interval of video time
    tick = c.next()
    assert (tick.index, tick.dropped) == (2, 0), "the pause must not count as video time"
    t.now += 1.0
    assert c.next().index == 3


def test_stop_ends_a_paused_wait() -> None:
    stop = threading.Event()
    c = TickClock(0.05, stop)
    c.pause()
    got: list[object] = []
    th = threading.Thread(target=lambda: got.append(c.next()))
    th.start()
    stop.set()
    th.join(5)
    assert got == [None]
