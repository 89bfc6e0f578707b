"""Issue 26, item 3: after a pause, the time the window shows runs smoothly with the wall clock.

Before: "playing at" was how far the session's decoder had read, which moves in whole ticks when the model
takes a frame (39.1 → 42.6 s within 0.7 s after a resume, then still). This samples the status bar's text
as the user reads it, on the real vtest.avi played in real time with the real tiny model. It is a
correctness check on the clock (monotonic, tracking wall time), not a speed measurement.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .conftest import configure

LONG = 60_000
TOLERANCE_S = 0.3  # the decoder's jumps were a whole interval (0.5 s here) and more


def _shown(w) -> float | None:  # type: ignore[no-untyped-def]
    w._poll_source()  # what the window's 500 ms timer does, sampled more often here
    m = re.search(r"playing at (\d+(?:\.\d+)?) s", w.status.source_status.text())
    return float(m.group(1)) if m else None


def test_time_shown_after_a_pause_is_monotonic_and_follows_the_wall_clock(qtbot, make_window,
                                                                         vtest_avi: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, interval=0.5, frames=1, talk=-50)
    w.show()
    w.start()
    qtbot.waitUntil(lambda: (_shown(w) or 0.0) >= 2.0, timeout=LONG)
    w.toggle_pause()
    qtbot.waitUntil(lambda: w.state == "paused", timeout=LONG)
    held = _shown(w)
    qtbot.wait(2000)
    assert held is not None and abs((_shown(w) or 0.0) - held) < 0.05, "the time stands still while paused"

    w.toggle_pause()
    resumed = time.monotonic()
    qtbot.waitUntil(lambda: w.state == "running", timeout=LONG)
    samples: list[tuple[float, float]] = []
    while time.monotonic() - resumed < 3.0:
        shown = _shown(w)
        if shown is not None:
            samples.append((time.monotonic() - resumed, shown))
        qtbot.wait(100)
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)

    assert len(samples) >= 15
    values = [v for _, v in samples]
    assert values == sorted(values), f"time went backwards after resume: {values}"
    for since, shown in samples:  # one decimal is shown: 0.05 s of rounding inside the tolerance
        expected = held + since
        assert abs(shown - expected) <= TOLERANCE_S, (
            f"{since:.2f} s after resume the window showed {shown:.1f} s, expected {expected:.2f} s: {samples}")
