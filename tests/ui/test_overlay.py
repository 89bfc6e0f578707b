"""The overlay shows every reply — checked on the pixels it paints — and keeps "Watching" in sight."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage

from app.ui.capture_exclusion import CaptureExclusion
from app.ui.overlay import Overlay

LONG = ("The man in the blue coat walks past the lamp post while two women cross the road behind him; "
        "a cyclist turns into the side street, a bus stops at the corner and three people get off, one of "
        "them carrying a large red umbrella that she opens although it is not raining, and a dog runs "
        "after a pigeon across the square until its owner calls it back and it sits down by the bench.")


def _text_rows(ov: Overlay) -> int:
    """Rows of the painted overlay that hold reply text (near-white pixels; the panel is dark)."""
    img = ov.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    white = (arr[..., :3].min(axis=2) > 200) & (arr[..., 3] > 200)
    return int(white.any(axis=1).sum())


def test_a_long_reply_is_drawn_elided_and_expands_to_show_all(qtbot) -> None:
    ov = Overlay()  # the default size, 460 × 220
    qtbot.addWidget(ov)
    ov.show()
    qtbot.waitExposed(ov)
    assert ov.add_reply(LONG, "00:12")
    rows = _text_rows(ov)
    assert rows > 40, "the long reply is painted, not dropped"
    assert ov.drawn == [(LONG, True)], "shown elided, since it is taller than the overlay"
    assert ov.more_rect is not None
    before = ov.height()
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=ov.more_rect.center())
    assert ov.expanded and ov.height() > before
    rows_all = _text_rows(ov)  # paints
    assert ov.drawn == [(LONG, False)], "expanded: the whole reply"
    assert rows_all > rows
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=ov.more_rect.center())
    assert not ov.expanded and ov.height() == before
    assert ov.resting_geometry().height() == before


def test_an_unbroken_babble_wraps_inside_the_card(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    ov.show()
    ov.add_reply("green" * 30 + "yyyy")
    ov.grab()
    lines = ov._wrap(ov.cards[0].text, ov.font(), 200)
    assert len(lines) > 1 and "".join(lines) == ov.cards[0].text


def test_older_short_cards_stay_above_the_newest(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    ov.show()
    ov.add_reply("A bus stops.", "00:02")
    ov.add_reply("Two people get off.", "00:04")
    ov.grab()
    assert [t for t, _ in ov.drawn] == ["Two people get off.", "A bus stops."]


def test_hiding_the_overlay_keeps_a_watching_pill_while_capturing(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    qtbot.addWidget(ov.pill)
    ov.set_user_visible(True)
    ov.set_capturing(True, "Screen 1")
    assert not ov.pill.isVisible(), "the overlay paints its own Watching badge"
    ov.set_user_visible(False)
    assert not ov.isVisible() and ov.pill.isVisible()
    assert "watching" in ov.pill.text().lower() and "Screen 1" in ov.pill.text()
    # The pill stays out of Duet's own screen grabs too.
    ex = CaptureExclusion([ov])
    ex.hide()
    assert not ov.pill.isVisible()
    ex.restore()
    assert ov.pill.isVisible()
    ov.set_capturing(False)
    assert not ov.pill.isVisible()


def test_dragging_still_moves_the_overlay_outside_the_show_all_control(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    ov.show()
    ov.add_reply(LONG)
    ov.grab()
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    assert not ov.expanded
