"""A question carries the same time in the live chat and in the saved session."""

from __future__ import annotations

from pathlib import Path

from .conftest import configure


def test_question_time_is_the_same_live_and_saved(qtbot, make_window, vtest_avi: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, interval=0.5, frames=2, talk=-50)
    w.start()
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)  # one turn done: video time > 0
    assert w.ask("Where is the man in the blue coat?")
    live = next(b for b in w.chat.bubbles if b.who == "you")
    assert "next frames" in live.stamp  # not stamped with the previous turn's time
    qtbot.waitUntil(lambda: w.last_result is not None and bool(w.last_result.question), timeout=60_000)
    directory = w.controller.writer.directory
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)
    page = w.sessions_page
    page.open(directory)
    saved = next(b for b in page.chat.bubbles if b.who == "you")
    assert live.stamp == saved.stamp
    assert not live.stamp.startswith("00:00")
