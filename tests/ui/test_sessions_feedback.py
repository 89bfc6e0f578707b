"""Issue 26, item 8: the Sessions page gives the feedback `duet sessions feedback` gives, and shows all of it.

"wrong" with a correction (a dialog that names the reply's time), "missed" at a moment, the marks and
corrections already in the session (the CLI's included), and a transcript that holds still under a
correction dialog while a re-read comes in. Real files, the real CLI in-process, real widgets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.cli import main as duet
from app.core.session_read import load_session
from app.core.sessions import SessionStore
from app.core.types import Frame, StepResult
from app.ui.sessions_page import SessionsPage


def _step(turn: int, text: str, silent: bool = False) -> StepResult:
    return StepResult(turn=turn, video_time=turn * 2.0 + 2, text=text, silent=silent,
                      frames=(Frame(np.full((90, 160, 3), 60 + turn, np.uint8), time=turn),))


@pytest.fixture
def page(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SessionsPage:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    store = SessionStore()
    w = store.create({"source": "camera:0", "model": "demo"})
    for turn in range(12):
        w.add_step(_step(turn, f"Reply number {turn}: a red square moves." if turn % 2 == 0 else "NO REPLY",
                         silent=turn % 2 == 1))
    w.close()
    p = SessionsPage(store)
    qtbot.addWidget(p)
    p.resize(1100, 500)
    p.show()
    p.list.setCurrentRow(0)
    return p


def test_marks_and_corrections_from_the_cli_are_shown(qtbot, page: SessionsPage) -> None:
    sid = page.current.id
    assert duet(["sessions", "feedback", sid, "--at", "6", "--kind", "wrong",
                 "--correction", "A blue circle moves."]) == 0
    assert duet(["sessions", "feedback", sid, "--at", "9", "--kind", "missed",
                 "--correction", "The square turned green."]) == 0
    page.refresh()
    lines = page.marks.lines()
    assert "00:06 · wrong: “A blue circle moves.”" in lines
    assert "00:09 · should have said something: “The square turned green.”" in lines
    bubble = next(b for b in page.chat.replies() if 2 in b.turns)  # turn 2 is the reply at 6 s
    assert bubble.correction_label is not None and "A blue circle moves." in bubble.correction_label.text()
    assert bubble.buttons["wrong"].isChecked()


def test_wrong_with_a_correction_from_the_page_names_the_reply_time_and_is_written(qtbot, page: SessionsPage) -> None:
    bubble = next(b for b in page.chat.replies() if 4 in b.turns)  # the reply at 10 s
    qtbot.mouseClick(bubble.buttons["correct"], Qt.MouseButton.LeftButton)
    dialog = bubble.correction_dialog
    assert dialog is not None and dialog.isVisible()
    assert "00:10" in dialog.windowTitle() and "00:10" in dialog.labelText()
    dialog.setTextValue("A red square stops.")
    dialog.accept()
    saved = load_session(page.current.directory)
    assert [(m.kind, m.turn, m.text) for m in saved.marks] == [("wrong", 4, "A red square stops.")]
    assert "00:10 · wrong: “A red square stops.”" in page.marks.lines()
    assert "A red square stops." in bubble.correction_label.text()


def test_missed_at_a_time_is_written_and_listed(qtbot, page: SessionsPage) -> None:
    dialog = page.marks.ask_missed()
    assert dialog is not None
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    assert not ok.isEnabled(), "a missed mark needs what should have been said"
    dialog.time.setValue(7.5)
    assert dialog.clock.text() == "video time 00:08"
    dialog.text.setText("The square left the frame.")
    assert ok.isEnabled()
    dialog.accept()
    saved = load_session(page.current.directory)
    assert [(m.kind, m.time, m.text) for m in saved.marks] == [("missed", 7.5, "The square left the frame.")]
    assert "00:08 · should have said something: “The square left the frame.”" in page.marks.lines()


def test_the_transcript_and_list_hold_still_while_a_correction_dialog_is_open(qtbot, page: SessionsPage,
                                                                             tmp_path: Path) -> None:
    store = page.store
    for _ in range(8):  # enough sessions for the list to scroll
        w = store.create({"source": "screen", "model": "demo"})
        w.add_step(_step(0, "Hello."))
        w.close()
    live = store.create({"source": "camera:1", "model": "demo"})  # a session that gets replies meanwhile
    for turn in range(12):
        live.add_step(_step(turn, f"Live reply {turn}, something else entirely."))
    page.refresh()
    row = next(i for i in range(page.list.count())
               if Path(page.list.item(i).data(Qt.ItemDataRole.UserRole)) == live.directory)
    page.list.setCurrentRow(row)
    qtbot.wait(200)
    bar = page.chat.verticalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(bar.maximum() // 3)
    page.list.verticalScrollBar().setValue(1)
    chat_at, list_at = bar.value(), page.list.verticalScrollBar().value()
    bubble = page.chat.replies()[3]
    dialog = bubble.ask_correction()
    for turn in range(12, 20):  # replies arrive, and the window asks the page to re-read (a session ended)
        live.add_step(_step(turn, f"Live reply {turn}, more."))
    page.refresh()
    qtbot.wait(50)
    assert bubble in page.chat.replies(), "the bubble under the dialog was not rebuilt away"
    assert bar.value() == chat_at and page.list.verticalScrollBar().value() == list_at
    dialog.setTextValue("Something else.")
    dialog.accept()  # closing it lets the waiting re-read run, which keeps the positions
    qtbot.wait(300)
    assert len(page.chat.replies()) == 20, "the re-read ran once the dialog closed"
    assert page.chat.verticalScrollBar().value() == chat_at
    assert page.list.verticalScrollBar().value() == list_at
    live.close()


def test_the_missed_dialog_shows_a_sentence_whole_while_it_is_typed(qtbot) -> None:
    from app.ui.session_marks import MissedDialog

    d = MissedDialog(30.0, 79.0)
    qtbot.addWidget(d)
    d.show()
    qtbot.waitExposed(d)
    d.text.setText("A man in a red jacket crosses the path.")
    assert d.text.width() >= 380 and d.text.fontMetrics().horizontalAdvance(d.text.text()) < d.text.width()
    assert d.clock.text() == "video time 00:30"
