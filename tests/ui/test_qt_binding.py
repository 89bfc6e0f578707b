"""Guard against a Qt binding that corrupts reference counts.

PySide6 6.12.0 on CPython 3.11 drops a reference to None on every Python slot call; None is not
immortal before 3.12, so after a few thousand signals (minutes of a running session: timers,
steps, previews) the interpreter aborts with "none_dealloc: deallocating None". 6.11.3 is fine.
"""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, Signal, Slot


class _Emitter(QObject):
    fired = Signal(object)


class _Receiver(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @Slot(object)
    def on(self, value: object) -> None:
        self.calls += 1


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from 3.12 on")
def test_slot_calls_do_not_leak_references_to_none(qapp) -> None:
    e, r = _Emitter(), _Receiver()
    e.fired.connect(r.on)
    e.fired.emit(0)  # warm-up
    before = sys.getrefcount(None)
    for i in range(500):
        e.fired.emit(i)
    after = sys.getrefcount(None)
    assert r.calls == 501
    assert after >= before - 20, (
        f"None lost {before - after} references over 500 slot calls: this Qt binding will crash a long "
        "session (PySide6 6.12.0 on Python 3.11 does; use PySide6 6.11.x or Python ≥ 3.12)")
