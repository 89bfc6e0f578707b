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


def test_a_reply_to_the_turn_in_flight_goes_above_a_question_asked_meanwhile(qtbot) -> None:
    """Asked while turn 3 runs, the question rides with turn 4: turn 3's reply must not read as its answer."""
    from app.ui.chat_view import ChatView

    chat = ChatView()
    qtbot.addWidget(chat)
    chat.add_reply("A man walks in.", 1.0, turn=2)
    chat.add_question("Where is he going?", pending=True)
    chat.settle_questions(None, 1.5)  # turn 3 carried no question
    chat.add_reply("He stops at the door.", 1.5, turn=3)
    chat.settle_questions("Where is he going?", 2.0)  # turn 4 carried it
    chat.add_reply("Towards the exit.", 2.0, turn=4)
    chat.add_notice("Paused for 3 s")
    order = [b.text for b in chat.bubbles]
    assert order == ["A man walks in.", "He stops at the door.", "Where is he going?", "Towards the exit.",
                     "Paused for 3 s"]
    layout = chat.widget().layout()
    shown = [layout.itemAt(i).widget().text for i in range(layout.count()) if layout.itemAt(i).widget()]
    assert shown == order  # the widgets on screen are in the same order as the list
    assert chat.bubbles[2].stamp.startswith("00:02")
