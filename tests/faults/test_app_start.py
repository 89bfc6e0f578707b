"""Fault catalogue, part 4: the desktop app starts on damaged user files and tells the user.

The real MainWindow, offscreen, over a data folder where settings.toml, library.json and a saved
session are all damaged (the app used to abort with exit 134 on one bad feedback line).
"""

from __future__ import annotations

import json

import numpy as np

from app.core.sessions import SessionStore
from app.core.settings import SettingsStore
from app.core.types import Frame, StepResult, StepTimings
from app.modelhub.library import ModelLibrary
from app.speech.recorder import PushToTalkRecorder
from app.ui.speech_bridge import SpeechBridge, VoiceInput

from ..speech.fake_sounddevice import FakeSoundDevice


def test_the_app_starts_on_damaged_files_and_says_what_was_set_aside(qtbot, tmp_path, monkeypatch):
    from app.ui.main_window import MainWindow

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.toml").write_bytes(b"[overlay\nvisible = \xff")
    models = tmp_path / "models"
    models.mkdir()
    (models / "library.json").write_text('{"models": {"wrong": "shape"}}')
    sessions = SessionStore(tmp_path / "sessions")
    w = sessions.create({"source": "file:a.mp4", "model": "tiny"}, durable=False)
    w.add_step(StepResult(turn=0, video_time=1.0, silent=False, text="a person walks in",
                          frames=(Frame(image=np.zeros((16, 16, 3), np.uint8), time=1.0, index=0, source="a"),),
                          timings=StepTimings(total_ms=1.0)))
    w.close()
    with open(w.directory / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"type": "feedback", "kind": "wrong"}) + "\n")  # no turn
    (w.directory / "meta.json").write_bytes(b'{"source": "\xff"}')

    store = SettingsStore(config)
    settings = store.load()  # sets the damaged settings file aside, as the app's start does
    # No sound card here: the microphone is the suite's fake device (as in tests/ui), the rest is real.
    speech = SpeechBridge(settings.speech, output_dir=tmp_path / "voice")
    voice = VoiceInput(settings.speech, recorder=PushToTalkRecorder(sd=FakeSoundDevice()),
                       model_dir=tmp_path / "speech-models")
    window = MainWindow(store, session_store=sessions, library=ModelLibrary(models), speech=speech,
                        voice_input=voice, tray=False)
    qtbot.addWidget(window)
    window.show()
    assert window.isVisible()
    assert "model library index was damaged" in window.last_error
    assert list(models.glob("library.corrupt-*.json")) and list(config.glob("settings.corrupt-*.toml"))
    assert list(w.directory.glob("meta.corrupt-*.json"))
    page = window.sessions_page
    texts = [page.list.item(i).text() for i in range(page.list.count())]
    assert len(texts) == 1 and "1 damaged record(s) skipped" in texts[0] and "meta.json is damaged" in texts[0]
    window.close()


def test_the_app_starts_on_settings_out_of_range_and_says_which(qtbot, tmp_path, monkeypatch):
    """``interval = nan``, ``frames_per_turn = 99``, ``opacity = -4``: defaults used, the window says so."""
    from app.core.settings import Settings
    from app.ui.main_window import MainWindow

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.toml").write_text("format = 1\n[session]\ninterval = nan\nframes_per_turn = 99\n"
                                          "[overlay]\nopacity = -4\n[setup]\nfirst_run_done = true\n")
    store = SettingsStore(config)
    settings = store.load()
    speech = SpeechBridge(settings.speech, output_dir=tmp_path / "voice")
    voice = VoiceInput(settings.speech, recorder=PushToTalkRecorder(sd=FakeSoundDevice()),
                       model_dir=tmp_path / "speech-models")
    window = MainWindow(store, session_store=SessionStore(tmp_path / "sessions"),
                        library=ModelLibrary(tmp_path / "m"), speech=speech, voice_input=voice, tray=False)
    qtbot.addWidget(window)
    window.show()
    defaults = Settings()
    assert window.settings.session.interval == defaults.session.interval
    assert window.settings.session.frames_per_turn == defaults.session.frames_per_turn
    assert window.overlay.panel_opacity == defaults.overlay.opacity
    assert window.last_error.startswith(f"Some settings in {store.path} were not usable and their defaults "
                                        "are used: [session] interval must be within 0.1 to 60 s, got nan")
    assert "[overlay] opacity must be within 0.2 to 1, got -4.0" in window.last_error
    window.close()
