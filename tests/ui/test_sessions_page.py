"""The Sessions page tells running, finished and failed sessions apart and never shows a stale pane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.types import Frame, StepResult

from .conftest import configure


def _step(turn: int, text: str) -> StepResult:
    return StepResult(turn=turn, video_time=turn * 2.0 + 2, text=text, silent=False,
                      frames=(Frame(np.full((90, 160, 3), 80, np.uint8), time=turn),))


def test_a_running_session_is_shown_as_running_not_interrupted(qtbot, make_window) -> None:
    w = make_window()
    live = w.sessions.create({"source": "camera:0", "model": "tiny"})
    live.add_step(_step(0, "A cat sits on the desk."))
    page = w.sessions_page
    page.refresh()
    assert "running now" in page.list.item(0).text() and "interrupted" not in page.list.item(0).text()
    page.list.setCurrentRow(0)
    assert any("running now" in n for n in page.chat.notices())
    assert not any("without being closed" in n for n in page.chat.notices())
    live.close()
    page.refresh()
    assert "running" not in page.list.item(0).text()


def test_refresh_keeps_the_open_session_or_clears_the_pane(qtbot, make_window) -> None:
    w = make_window()
    writer = w.sessions.create({"source": "camera:0", "model": "tiny"})
    writer.add_step(_step(0, "Hello."))
    writer.close()
    page = w.sessions_page
    page.refresh()
    assert page.current is None and page.chat.bubbles == [] and not page.md_button.isEnabled()
    page.list.setCurrentRow(0)
    assert page.md_button.isEnabled()
    page.refresh()  # still selected and open, buttons live
    assert page.list.currentRow() == 0 and page.current is not None and page.md_button.isEnabled()
    import shutil

    shutil.rmtree(writer.directory)
    page.refresh()  # gone: the pane says so instead of showing it
    assert page.current is None and page.chat.bubbles == [] and "Pick a session" in page.header.text()
    assert not page.md_button.isEnabled() and not page.json_button.isEnabled()


def test_a_failed_start_leaves_no_empty_entry(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window(source=str(tmp_path / "missing.mp4"))
    configure(w)
    w.start()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)
    assert w.last_error, "the reason was shown in the window"
    assert w.sessions.list() == []
    w.sessions_page.refresh()
    assert w.sessions_page.list.count() == 0


def test_old_empty_sessions_say_they_did_not_start(qtbot, make_window) -> None:
    w = make_window()
    writer = w.sessions.create({"source": "camera:0", "model": "tiny"})
    writer.close("error")
    w.sessions_page.refresh()
    text = w.sessions_page.list.item(0).text()
    assert "did not start" in text and "0 replies" not in text and "error" in text
