"""The settings dialog stays on screen with a long error, and Esc on the Shortcuts tab closes it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.core.settings import Settings
from app.ui.settings_dialog import SettingsDialog

ERROR = ("Download failed: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded with url: "
         "/ggerganov/whisper.cpp/resolve/main/ggml-base.en.bin?download=true_" + "x" * 1500
         + " (Caused by NameResolutionError: Failed to resolve 'huggingface.co')")


def test_a_long_one_line_error_wraps_and_the_dialog_fits_the_screen(qtbot) -> None:
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    dlg.show_status(ERROR)
    dlg.adjustSize()
    screen = QGuiApplication.primaryScreen().availableGeometry()
    assert dlg.width() <= screen.width() and dlg.sizeHint().width() <= screen.width()
    assert dlg.minimumSizeHint().width() <= screen.width()
    assert dlg.stt_status.toolTip() == ERROR  # the whole text is still there


def test_esc_on_the_shortcuts_tab_closes_instead_of_recording(qtbot) -> None:
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    edit = dlg.keys["mute"]
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_Escape)
    assert not dlg.isVisible() and dlg.result() == 0
    assert edit.keySequence().toString() == Settings().shortcuts.mute
    assert dlg.result_settings().shortcuts.mute == Settings().shortcuts.mute


def test_other_keys_are_still_recorded(qtbot) -> None:
    dlg = SettingsDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.show()
    edit = dlg.keys["mute"]
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_U, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
    assert edit.keySequence().toString().startswith("Ctrl+Alt+U")
    assert dlg.isVisible()
