"""Voice on with no audio player: the window says so once, and says it again when voice is turned on."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.sessions import SessionStore
from app.core.settings import SettingsStore
from app.modelhub.library import ModelLibrary
from app.ui.main_window import MainWindow
from app.ui.speech_bridge import SpeechBridge


def test_no_player_is_said_in_the_window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no aplay (nor anything else) on the PATH
    monkeypatch.setenv("DUET_DEV_MODELS", "1")
    store = SettingsStore(tmp_path / "config")
    speech = SpeechBridge(store.load().speech)  # the real speaker, to the sound card (not to files)
    w = MainWindow(store, session_store=SessionStore(tmp_path / "sessions"),
                   library=ModelLibrary(tmp_path / "models"), speech=speech, tray=False)
    qtbot.addWidget(w)
    try:
        said = [n for n in w.watch.chat.notices() if "aplay" in n]
        assert len(said) == 1 and "alsa-utils" in said[0]
        assert "aplay" in w.watch.banner.text()
        assert "no sound" in w.watch.mute_button.text() and "aplay" in w.watch.mute_button.toolTip()
        w.speech.say("A reply nobody can hear.")  # not handed to espeak: no `aplay: not found` per reply
        assert w.speech.speaker.idle() and not w.speech.speaker.spoken
        assert speech.check_output() is not None
        assert len([n for n in w.watch.chat.notices() if "aplay" in n]) == 1, "said once, not at every check"
        w.settings_sync.set_muted(True)
        assert w.watch.mute_button.text() == "Voice off"
        w.settings_sync.set_muted(False)  # turning the voice on checks again and says it again
        assert len([n for n in w.watch.chat.notices() if "aplay" in n]) == 2
    finally:
        w.close()
