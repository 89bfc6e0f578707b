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
    live = next(b for b in w.watch.chat.bubbles if b.who == "you")
    assert "the answer comes with the next step" in live.stamp  # said while no step has carried it
    qtbot.waitUntil(lambda: w.last_result is not None and bool(w.last_result.question), timeout=60_000)
    directory = w.controller.writer.directory
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)
    page = w.sessions_page
    page.open(directory)
    saved = next(b for b in page.chat.bubbles if b.who == "you")
    assert live.stamp == saved.stamp  # the moment it was typed, and the step that carried it, in both
    assert not live.stamp.startswith("00:00")
    assert "next step" not in live.stamp


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


def test_correcting_a_folded_reply_names_the_moment_the_correction_goes_to(qtbot) -> None:
    """A bubble standing for the same reply at 00:55 … 01:01 stores the correction at its first reply (00:55):
    the dialog says so, instead of naming the latest time the user saw on the bubble."""
    from app.ui.chat_view import ChatView

    chat = ChatView(corrections=True)
    qtbot.addWidget(chat)
    got: list[tuple[int, str]] = []
    marks: list[tuple[int, str, bool]] = []
    chat.add_reply("Said once.", 40.0, turn=1)
    for turn, t in ((7, 55.0), (8, 57.0), (9, 59.0), (10, 61.0)):
        chat.add_reply("A yellow circle", t, turn=turn)
    once, folded = chat.replies()
    folded.correction.connect(lambda turn, text: got.append((turn, text)))
    folded.feedback.connect(lambda turn, kind, on: marks.append((turn, kind, on)))
    assert folded.stamp == "01:01" and folded.count == 4
    d = folded.ask_correction()
    assert d.windowTitle() == "Correct the reply at 00:55"
    label = d.labelText().replace("\u200b", "")  # soft_wrap's break opportunities
    assert "4 times, from 00:55 to 01:01" in label and "goes to the first, at 00:55" in label
    from PySide6.QtWidgets import QLineEdit

    assert d.findChild(QLineEdit).width() >= 380, "a sentence can be read while it is typed"
    d.setTextValue("Two people walk past the lamp post.")
    d.accept()
    assert got == [(7, "Two people walk past the lamp post.")]
    assert marks == [(8, "wrong", True), (9, "wrong", True), (10, "wrong", True)]
    d1 = once.ask_correction()
    assert d1.windowTitle() == "Correct the reply at 00:40" and "At 00:40 Duet said" in d1.labelText()
    d1.reject()
