"""Issue 26 (round 2), item 6: a mark made in the Watch chat after the clip ended is written, or says why not.

A real short clip through the real tiny model; the marks are read back from the saved session's file
(what ``duet sessions list`` counts).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from app.core.sessions import load_session

from .conftest import configure

LONG = 30_000


def _clip(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """A short video of a square crossing a grey background."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        frame = np.full((240, 320, 3), 90, np.uint8)
        x = 10 + 9 * i
        frame[90:150, x:x + 60] = (40, 40, 220)
        out.write(frame)
    out.release()
    return path


def test_marks_after_the_clip_ended_are_written_to_the_finished_session(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window(source=str(_clip(tmp_path / "square.avi")))
    configure(w, interval=0.5, talk=50)  # +50: the untrained model speaks every turn
    w.start()
    qtbot.waitUntil(lambda: any("source ended" in n for n in w.watch.chat.notices()), timeout=LONG)
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
    assert w.controller.writer is None, "the session is closed: no transcript takes marks any more"
    directory = w.sessions.find(w.controller.last_session_id)
    first, last = w.watch.chat.replies()[0], w.watch.chat.replies()[-1]

    first.buttons["wrong"].click()
    last.buttons["good"].click()
    last.apply_correction("A red square crosses from left to right.")  # what "✎ correct…" records
    saved = load_session(directory)
    assert saved.feedback[first.turn] == {"wrong"}
    assert saved.feedback[last.turns[0]] >= {"good", "wrong"}
    assert ("wrong", "A red square crosses from left to right.") in [(m.kind, m.text) for m in saved.marks]
    assert first.buttons["wrong"].isChecked() and w.watch.banner.isHidden()
    first.buttons["wrong"].click()  # and withdrawn
    assert load_session(directory).feedback.get(first.turn, set()) == set()

    # Where a mark cannot be kept, the button does not pretend: it goes back and says why.
    shutil.rmtree(directory)
    first.buttons["good"].click()
    assert not first.buttons["good"].isChecked()
    assert first.buttons["good"].toolTip().startswith("Not saved:") and "gone" in first.buttons["good"].toolTip()
    assert not w.watch.banner.isHidden() and "gone" in w.watch.banner.text()
