"""Settings across restarts, the overlay, the sessions browser, the models page, the settings dialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.core.sessions import load_session
from app.core.settings import Settings
from app.core.types import Frame, StepResult
from app.ui.overlay import Overlay
from app.ui.settings_dialog import SettingsDialog

from .conftest import configure


def test_settings_survive_a_restart(qtbot, make_window) -> None:
    w = make_window(source="camera:3")
    configure(w, interval=0.75, frames=1, talk=-12)
    w.settings_sync.set_muted(True)
    w.settings_sync.set_overlay_visible(False)
    w.resize(1111, 777)
    w.close()

    again = make_window()
    assert again.settings.session.source == "camera:3"
    assert again.watch.source_label.text() == "Camera 3"
    assert again.watch.interval_spin.value() == 0.75
    assert again.watch.frames_spin.value() == 1
    assert again.watch.talk_slider.value() == -12
    assert again.watch.mute_button.isChecked() and again.speech.muted
    assert not again.watch.overlay_button.isChecked()
    assert (again.width(), again.height()) == (1111, 777)


def test_a_damaged_settings_file_is_reported_and_replaced(qtbot, make_window, tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "settings.toml").write_text("this is = = not toml [", encoding="utf-8")
    w = make_window()
    assert not w.watch.banner.isHidden() and "damaged" in w.watch.banner.text()
    assert w.settings == Settings()
    assert list(cfg.glob("settings.corrupt-*.toml"))


def test_overlay_folds_near_repeats_and_fades(qtbot) -> None:
    ov = Overlay(fade_seconds=3.0)  # long enough for the checks below on a loaded machine
    qtbot.addWidget(ov)
    ov.show()
    assert ov.add_reply("A man in a blue coat walks to the left.", "00:04")
    assert not ov.add_reply("A man in a blue coat is walking to the left", "00:06")  # folded
    assert ov.add_reply("Two women cross the road near the lamp post.", "00:08")
    # The folded card stands for the latest wording (and its time); the count says it was said twice.
    assert ov.visible_texts() == ["A man in a blue coat is walking to the left",
                                  "Two women cross the road near the lamp post."]
    ov.grab()
    assert "×2 ▾" in ov.painted and "Duet · 00:06" in ov.painted and "Duet · 00:04" not in ov.painted
    qtbot.waitUntil(lambda: not ov.visible_texts(), timeout=15_000)  # faded out


def test_overlay_click_through_toggles_on_the_native_window(qtbot) -> None:
    ov = Overlay()
    qtbot.addWidget(ov)
    ov.show()
    qtbot.waitExposed(ov)
    assert ov.windowFlags() & Qt.WindowType.WindowStaysOnTopHint
    assert ov.windowFlags() & Qt.WindowType.FramelessWindowHint
    assert ov.testAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
    ov.set_click_through(True)
    assert ov.windowHandle().flags() & Qt.WindowType.WindowTransparentForInput
    assert ov.isVisible(), "toggling must not hide the window"
    ov.set_click_through(False)
    assert not ov.windowHandle().flags() & Qt.WindowType.WindowTransparentForInput


def _step(turn: int, text: str) -> StepResult:
    import numpy as np

    return StepResult(turn=turn, video_time=turn * 2.0 + 2, text=text, silent=False,
                      frames=(Frame(np.full((90, 160, 3), 80, np.uint8), time=turn),))


def test_sessions_page_browses_gives_feedback_and_exports(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window()
    writer = w.sessions.create({"source": "file:pasta.mp4", "model": "tiny"})
    writer.add_step(_step(0, "The water is boiling."))
    writer.add_step(_step(1, "Add the pasta now."))
    writer.close()
    page = w.sessions_page
    page.refresh()
    assert page.list.count() == 1
    page.list.setCurrentRow(0)
    assert [b.text for b in page.chat.replies()] == ["The water is boiling.", "Add the pasta now."]
    page.chat.replies()[1].buttons["late"].click()
    page.chat.replies()[0].buttons["wrong"].click()
    page.chat.replies()[0].buttons["wrong"].click()  # and back off
    saved = load_session(writer.directory)
    assert saved.feedback == {1: {"late"}, 0: set()}
    md = page.export_to(tmp_path / "out.md", "md")
    text = md.read_text(encoding="utf-8")
    assert "Add the pasta now. _(should have spoken earlier)_" in text
    # Images are linked relative to the exported file, so the link resolves from where it is read.
    link = f"sessions/{writer.directory.name}/thumbs/turn-000000.jpg"
    assert f"]({link})" in text and writer.directory.as_posix() not in text
    assert (md.parent / link).is_file()
    js = page.export_to(tmp_path / "out.json", "json")
    assert '"late"' in js.read_text(encoding="utf-8")


def test_live_feedback_lands_in_the_running_session(qtbot, make_window, vtest_avi: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, talk=50)
    w.start()
    qtbot.waitUntil(lambda: len(w.watch.chat.replies()) >= 1, timeout=30_000)
    w.watch.chat.replies()[0].buttons["redundant"].click()
    w.watch.chat.replies()[0].apply_correction("Two people cross the hall.")  # what "✎ correct…" records
    directory = w.controller.writer.directory
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=30_000)
    saved = load_session(directory)
    assert saved.feedback[w.watch.chat.replies()[0].turn] == {"redundant", "wrong"}
    assert [(m.kind, m.text) for m in saved.marks if m.kind == "wrong"] == [("wrong", "Two people cross the hall.")]
    assert w.watch.chat.replies()[0].buttons["wrong"].isChecked()


def test_model_page_validates_and_imports_a_pair(qtbot, make_window, tiny_model, tmp_path: Path) -> None:
    w = make_window()
    page = w.model_page
    names = [page.table.item(r, 0).text() for r in range(page.table.rowCount())]
    assert names[:1] == ["demo"] and "tiny" not in names  # the random test model is never offered to users
    assert page.hub_box.isEnabled()  # downloads: tests/ui/test_model_page.py
    # Swapped files: validation explains, nothing is imported.
    page.name_edit.setText("mine")
    page.model_edit.setText(str(tiny_model.mmproj))
    page.mmproj_edit.setText(str(tiny_model.model))
    page.start_import()
    assert page.message.text().startswith("✗") and "swap" in page.message.text()
    assert w.library.user_entries() == []  # (the built-in demo model is always listed)
    # The right order imports, in the background, and the model shows up in the Watch tab.
    page.model_edit.setText(str(tiny_model.model))
    page.mmproj_edit.setText(str(tiny_model.mmproj))
    page.start_import()
    qtbot.waitUntil(lambda: page.message.text().startswith("✓ Imported"), timeout=30_000)
    assert [e.name for e in w.library.user_entries()] == ["mine"]
    assert w.watch.model_combo.findData("mine") >= 0


def test_settings_dialog_round_trip(qtbot, make_window) -> None:
    w = make_window()
    dlg = w.settings_sync.open_settings()
    assert isinstance(dlg, SettingsDialog)
    assert dlg.voice.count() > 1, "espeak-ng voices are listed"
    dlg.rate.setValue(222)
    dlg.muted.setChecked(True)
    dlg.click_through.setChecked(True)
    dlg.fade.setValue(42)
    dlg.keys["mute"].setKeySequence("Ctrl+Alt+U")
    dlg.accept()
    assert w.settings.speech.rate == 222 and w.speech.speaker.rate == 222
    assert w.speech.muted and w.overlay.click_through and w.overlay.fade_seconds == 42
    assert w.settings.shortcuts.mute == "Ctrl+Alt+U"
    assert w.store.load().speech.rate == 222  # saved at once


def test_main_entry_point_starts_and_quits(qtbot, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtCore import QTimer

    from app.ui.main import main

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))

    wizards: list[str] = []

    def close_wizard() -> None:  # a fresh config: the first-run wizard comes first (tests/ui/test_first_run.py)
        for top in QApplication.topLevelWidgets():
            if top.windowTitle() == "Welcome to Duet" and top.isVisible():
                wizards.append(top.windowTitle())
                top.reject()

    def close_all() -> None:
        for top in QApplication.topLevelWidgets():
            if top.windowTitle() == "Duet":
                top.close()

    QTimer.singleShot(1000, close_wizard)
    QTimer.singleShot(2500, close_all)
    assert main(["--no-tray", "--config-dir", str(tmp_path / "cfg"), "--source", "camera:2"]) == 0
    assert wizards == ["Welcome to Duet"]
    text = (tmp_path / "cfg" / "settings.toml").read_text(encoding="utf-8")
    assert text.count('source = "camera:2"') == 1 and "first_run_done = true" in text


def test_keyboard_shortcuts(qtbot, make_window) -> None:
    w = make_window()
    w.show()
    w.activateWindow()
    qtbot.waitExposed(w)
    mods = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    assert not w.speech.muted
    qtbot.keyClick(w.windowHandle(), Qt.Key.Key_M, mods)  # Ctrl+Shift+M: mute
    assert w.speech.muted and w.watch.mute_button.text() == "Voice off"
    shown = w.overlay.isVisible()
    qtbot.keyClick(w.windowHandle(), Qt.Key.Key_O, mods)  # Ctrl+Shift+O: overlay
    assert w.overlay.isVisible() != shown
    qtbot.keyClick(w.windowHandle(), Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)  # Ctrl+L: ask
    assert w.watch.question.hasFocus()
