"""Issue 26 (round 2), item 2: what reaches the chat and the overlay is clean, and repeats do not pile up.

Replies are handed to the real window through its worker's ``step`` signal, the way a session delivers
them, with the glitches seen in use (glued doubles, raw special tokens, control characters); the
checks read the chat's labels and what the overlay painted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.sessions import load_session
from app.core.types import Frame, StepResult
from app.ui.reply_text import shown_text

from .conftest import configure

LONG = 30_000


def _step(turn: int, text: str) -> StepResult:
    return StepResult(turn=turn, video_time=2.0 * turn + 2, text=text, silent=False,
                      frames=(Frame(np.full((90, 160, 3), 80, np.uint8), time=turn),))


def test_the_guard_keeps_special_tokens_controls_and_glued_doubles_off_the_screen() -> None:
    assert shown_text("A yellowA yellow circle") == "A yellow circle"
    assert shown_text("A red circle appeared.</tool_call>") == "A red circle appeared."
    assert shown_text("<tool_call>A blue square.<|im_end|>") == "A blue square."
    assert shown_text("A green star<|im_e") == "A green star"  # a token cut off by the reply cap
    assert shown_text("A red square. A red square.") == "A red square."
    assert shown_text("Two\x07 people\x1b[2J wave\u202e.\u200b") == "Two people wave."
    assert shown_text("</tool_call>") == shown_text("<|endoftext|>") == ""
    assert shown_text("McDonald's sign, bye bye.") == "McDonald's sign, bye bye."  # ordinary text untouched


def test_glitched_replies_reach_chat_and_overlay_clean_and_identical_ones_are_counted(qtbot, make_window) -> None:
    w = make_window()
    w.show()
    w.overlay.resize(460, 400)
    w.overlay.show()
    replies = ["A yellowA yellow circle", "A red square.</tool_call>", "<|im_end|>", "A red square.",
               "a red square", "Two\x07 people\x1b[31m wave.", "A red square."]
    for turn, text in enumerate(replies):
        w.worker.step.emit(_step(turn, text))
    qtbot.waitUntil(lambda: len(w.watch.chat.replies()) == 4, timeout=LONG)
    qtbot.wait(100)  # any late step would land now
    bubbles = w.watch.chat.replies()
    assert [b.body.text() for b in bubbles] == ["A yellow circle", "A red square.", "Two people wave.",
                                                "A red square."]
    # Three identical replies in a row: one bubble, with the count and the latest time in its head.
    assert "×3" in bubbles[1].head.text() and "00:10" in bubbles[1].head.text()
    assert "00:04" in bubbles[1].head.toolTip() and "00:08" in bubbles[1].head.toolTip()
    assert "×" not in bubbles[0].head.text()
    w.overlay.grab()
    painted = " ".join(w.overlay.painted)
    assert "A yellow circle" in painted and "Two people wave." in painted
    for junk in ("<", "|>", "tool_call", "\x07", "\x1b", "A yellowA"):
        assert junk not in painted
        assert all(junk not in b.body.text() for b in bubbles)


def test_a_mark_on_a_counted_bubble_marks_every_reply_it_stands_for(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window()
    writer = w.sessions.create({"source": "/videos/pasta.mp4", "model": "tiny"})
    for turn, text in enumerate(["The water boils.", "The water boils.", "Add the pasta now."]):
        writer.add_step(_step(turn, text))
    writer.close()
    page = w.sessions_page
    page.refresh()
    page.list.setCurrentRow(0)
    bubbles = page.chat.replies()
    assert [b.body.text() for b in bubbles] == ["The water boils.", "Add the pasta now."]
    bubbles[0].buttons["redundant"].click()
    assert load_session(writer.directory).feedback == {0: {"redundant"}, 1: {"redundant"}}


def test_a_real_session_shows_every_saved_reply_once(qtbot, make_window, vtest_avi: Path) -> None:
    """The untrained tiny model babbles: whatever it says, the chat accounts for each saved reply."""
    w = make_window(source=str(vtest_avi))
    configure(w, talk=50)
    w.start()
    qtbot.waitUntil(lambda: sum(b.count for b in w.watch.chat.replies()) >= 3, timeout=LONG)
    directory = w.controller.writer.directory
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
    saved = load_session(directory)
    shown = [shown_text(s["text"]) for s in saved.replies]
    assert sum(b.count for b in w.watch.chat.replies()) == len([t for t in shown if t])
    assert all(b.body.text() == shown_text(b.body.text()) for b in w.watch.chat.replies())
