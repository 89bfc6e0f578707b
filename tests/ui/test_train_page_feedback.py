"""Issue 25 from the Train page, as a user drives it: a session where the demo said the wrong thing, corrected in the
user's own words; Start on the Train page (the real `duet train feedback` process, the bundled demo as base);
the page ends showing the correction's verdict, learned, and the held-out check.

Cost: one correction is learned in 2–4 rounds of 40 steps (bench/feedback_learning.py): 1–2 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.core.sessions import SessionStore
from app.modelhub.library import ModelLibrary
from app.trainer.feedback_scenario import PLANS, WRONG_TEXT, marked_sessions
from app.ui.train_page import TrainPage


@pytest.fixture
def demo_hf(bundled_demo_model, tmp_path_factory) -> Path:
    from app.trainer.bundled_demo import bundled_demo_checkpoint

    return bundled_demo_checkpoint(tmp_path_factory.mktemp("bundled-demo") / "hf")


def test_a_correction_in_my_words_is_learned_and_the_page_says_so(qtbot, bundled_demo_model, demo_hf, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    store = SessionStore(tmp_path / "data" / "sessions")
    wrong = next(p for p in PLANS if p.kind == "wrong")
    marked_sessions(store, tmp_path / "clips", *bundled_demo_model, plans=(wrong,))

    page = TrainPage(store, poll_ms=200)
    qtbot.addWidget(page)
    page.show()
    assert page.data_combo.itemText(0).endswith("(1)")
    page.base_combo.setEditText("")
    qtbot.keyClicks(page.base_combo.lineEdit(), str(demo_hf))
    page.name_edit.clear()
    qtbot.keyClicks(page.name_edit, "mine")
    page.max_steps_spin.setValue(400)  # the budget field: up to 10 rounds of 40 steps
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.job is not None, page.status.text()
    qtbot.waitUntil(lambda: page.job is not None and not page.job.running(), timeout=900_000)
    page.poll()
    assert page.use_button.isEnabled(), page.status.text()

    shown = page.verdicts_label.text()
    assert f"✓ learned: wrong at 8 s: “{WRONG_TEXT}”" in shown, shown
    assert shown.startswith("The new model on your marks:") and "Held-out clips (16 clips, 64 turns)" in shown
    assert "It says every correction" in page.status.text()
    assert ModelLibrary(tmp_path / "data" / "models").get("mine") is not None
