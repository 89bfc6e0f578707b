"""Issue 26 (round 2), item 1: the overlay folds only true repeats, shows the latest time, and a fold opens.

Checked on what the overlay paints: the strings its last paint drew (``Overlay.painted``) and its pixels.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from app.ui.dedup import same_meaning
from app.ui.overlay import Overlay


def _text_rows(ov: Overlay) -> int:
    """Rows of the painted overlay that hold light text (the panel is dark)."""
    img = ov.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    light = (arr[..., :3].min(axis=2) > 200) & (arr[..., 3] > 200)
    return int(light.any(axis=1).sum())


def _overlay(qtbot, height: int = 420) -> Overlay:
    ov = Overlay(fade_seconds=120.0)  # nothing fades during the test, however slow the machine
    qtbot.addWidget(ov)
    ov.resize(460, height)
    ov.show()
    qtbot.waitExposed(ov)
    return ov


def test_a_different_shape_colour_or_number_is_never_folded(qtbot) -> None:
    ov = _overlay(qtbot)
    replies = ["The circle appeared.", "The triangle appeared.", "A blue circle", "A yellow circle"]
    for i, text in enumerate(replies):
        assert ov.add_reply(text, f"00:0{2 * i + 2}"), f"{text!r} is news, not a repeat"
    ov.grab()
    assert [line for line in ov.painted if line in replies] == list(reversed(replies))  # newest at the bottom
    assert not any(s.startswith("×") for s in ov.painted), "no card claims to hold a repeat"
    assert ov.add_reply("Three blue circles", "00:10") and ov.add_reply("Two blue circles", "00:12")
    # What is a repeat: case, punctuation, articles and a verb's tense aside, the same words.
    assert same_meaning("The circle appeared.", "the circle appeared!")
    assert same_meaning("A man in a blue coat walks to the left.", "A man in a blue coat is walking to the left")
    assert same_meaning("Two red squares.", "2 red squares")
    assert not same_meaning("A circle appeared.", "Circles appeared.")  # one against several is a count


def test_a_fold_shows_the_latest_time_and_opens_to_list_what_it_folded(qtbot) -> None:
    ov = _overlay(qtbot, height=220)  # the default height: the fold grows the overlay to fit its list
    assert ov.add_reply("The circle appeared.", "00:02")
    assert ov.add_reply("A red square moves right.", "00:04")
    assert not ov.add_reply("the circle appeared", "00:06")
    assert not ov.add_reply("The circle appeared!", "00:09")
    ov.grab()
    assert ov.painted[:3] == ["Duet · 00:09", "×3 ▾", "The circle appeared!"], \
        "the folded card is the newest, with the latest reply, its time and the count"
    assert "Duet · 00:02" not in ov.painted
    closed_rows, closed_height = _text_rows(ov), ov.height()

    badge = next(rect for rect, _card in ov.fold_rects)
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=badge.center())
    opened_rows = _text_rows(ov)  # paints
    assert ov.painted[:5] == ["Duet · 00:09", "×3 ▴", "The circle appeared!", "00:02 · The circle appeared.",
                              "00:06 · the circle appeared"], "the earlier replies, with their times, under it"
    assert opened_rows > closed_rows, "the folded replies are drawn, not only listed"
    assert ov.height() >= closed_height and "A red square moves right." in ov.painted, "nothing gave way"

    badge = next(rect for rect, _card in ov.fold_rects)
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=badge.center())
    ov.grab()
    assert "×3 ▾" in ov.painted and "00:02 · The circle appeared." not in ov.painted
    assert ov.height() == closed_height, "closing the fold gives the overlay back its size"
