"""A real main window, offscreen, with the real tiny model, real videos and real espeak-ng (to files).

Only the microphone is fake (no sound card here). Every store lives in the test's tmp_path.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.sessions import SessionStore
from app.core.settings import SettingsStore
from app.modelhub.library import ModelLibrary
from app.speech.recorder import PushToTalkRecorder
from app.ui.main_window import MainWindow
from app.ui.speech_bridge import SpeechBridge, VoiceInput

from ..speech.fake_sounddevice import FakeSoundDevice


@pytest.fixture(autouse=True)
def _free_windows_on_the_gui_thread() -> Iterator[None]:
    """Collect what a test left in reference cycles (a window held by a lambda slot of its own child) here,
    on the GUI thread, once pytest-qt has closed it. Left to the cyclic GC, a parentless Qt object would be
    deleted on whichever thread allocates next, such as a later test's session thread, and Qt objects
    deleted off their thread crash the process (seen once: a segfault inside ``ast.parse`` on a session
    thread, in ``make test``)."""
    yield
    gc.collect()


@pytest.fixture
def step_threads(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Idents of every thread that asked the real engine (its own process) for a step during the test."""
    from app.engine.engine_process import EngineProcess

    seen: set[int] = set()
    real = EngineProcess.step

    def recording_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.add(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EngineProcess, "step", recording_step)
    return seen


@pytest.fixture
def make_window(qtbot, tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., MainWindow]]:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_DEV_MODELS", "1")  # these tests run the random tiny model; users never see it
    windows: list[MainWindow] = []

    def make(*, sd: FakeSoundDevice | None = None, source: str | None = None, **kwargs: object) -> MainWindow:
        store = SettingsStore(tmp_path / "config")
        settings = store.load()
        speech = SpeechBridge(settings.speech, output_dir=tmp_path / "voice")
        voice = VoiceInput(settings.speech, recorder=PushToTalkRecorder(sd=sd or FakeSoundDevice()),
                           model_dir=tmp_path / "speech-models")
        w = MainWindow(store, session_store=SessionStore(tmp_path / "sessions"),
                       library=ModelLibrary(tmp_path / "models"), speech=speech, voice_input=voice,
                       tray=False, **kwargs)  # type: ignore[arg-type]
        qtbot.addWidget(w)
        if source:
            w.settings_sync.set_source(source)
        windows.append(w)
        return w

    yield make
    for w in windows:
        if w.isVisible() or w.runner.thread.isRunning():
            w.close()


def configure(w: MainWindow, *, interval: float = 0.5, frames: int = 1, talk: int = 50) -> None:
    w.watch.model_combo.setCurrentIndex(w.watch.model_combo.findData("tiny"))
    w.watch.interval_spin.setValue(interval)
    w.watch.frames_spin.setValue(frames)
    w.watch.talk_slider.setValue(talk)
