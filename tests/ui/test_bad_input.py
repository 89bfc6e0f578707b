"""Bad input ends in a message in the window — never a crash, never a frozen UI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.capture.camera import CameraSource

from ..speech.fake_sounddevice import FakeSoundDevice
from .conftest import configure

LONG = 30_000


def _expect_message(qtbot, w, *needles: str) -> str:
    qtbot.waitUntil(lambda: w.state == "idle" and not w.watch.banner.isHidden(), timeout=LONG)
    text = w.watch.banner.text()
    for n in needles:
        assert n.lower() in text.lower(), text
    assert text in w.watch.chat.notices()
    assert w.watch.start_button.isEnabled(), "the user can try again"
    return text


def test_no_camera(qtbot, make_window) -> None:
    w = make_window(source="camera:9")
    configure(w)
    w.start()
    _expect_message(qtbot, w, "camera")


def test_video_that_cannot_be_decoded(qtbot, make_window, tmp_path: Path) -> None:
    junk = tmp_path / "holiday.mp4"
    junk.write_bytes(np.random.default_rng(1).bytes(200_000))
    w = make_window(source=str(junk))
    configure(w)
    w.start()
    _expect_message(qtbot, w, "holiday.mp4", "decode")


def test_missing_video_file(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window(source=str(tmp_path / "gone.mkv"))
    configure(w)
    w.start()
    _expect_message(qtbot, w, "not found")


def test_missing_model_file(qtbot, make_window, vtest_avi: Path, tmp_path: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w)
    w.settings_sync.set_model(str(tmp_path / "mmduet2-q4.gguf"))
    w.start()
    text = _expect_message(qtbot, w, "model could not be loaded", "mmduet2-q4.gguf")
    assert "no such file" in text.lower()
    # A session that never started leaves no empty entry in the Sessions tab (the banner says why).
    assert w.sessions.list() == []


class _Camera:
    """A webcam that works for a few reads, is then unplugged, and never comes back."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.image = np.random.default_rng(2).integers(0, 255, (240, 320, 3), np.uint8)

    def isOpened(self) -> bool:  # noqa: N802
        return not self.state["unplugged"]

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.state["reads"] += 1
        if self.state["reads"] > 40:
            self.state["unplugged"] = True
        return (False, None) if self.state["unplugged"] else (True, self.image)

    def get(self, prop: int) -> float:
        return 30.0

    def release(self) -> None:
        pass


def test_camera_unplugged_mid_session(qtbot, make_window) -> None:
    state = {"reads": 0, "unplugged": False}
    w = make_window(source="camera:0",
                    source_factory=lambda req: CameraSource(0, opener=lambda dev: _Camera(state),
                                                            retry_delays=(0.1,)))
    configure(w, interval=0.3, talk=50)
    w.start()
    qtbot.waitUntil(lambda: w.state == "running", timeout=LONG)
    # The banner and the status label are refreshed by separate reads of the source: wait for both.
    qtbot.waitUntil(lambda: not w.watch.banner.isHidden() and "camera lost" in w.watch.banner.text(), timeout=LONG)
    qtbot.waitUntil(lambda: "lost" in w.status.source_status.text(), timeout=LONG)
    assert w.state == "running", "the session waits for the camera to come back"
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)


def test_no_audio_device(qtbot, make_window) -> None:
    w = make_window(sd=FakeSoundDevice(has_input=False))
    w.push_to_talk()
    qtbot.waitUntil(lambda: not w.watch.banner.isHidden(), timeout=5000)
    assert "No microphone" in w.watch.banner.text()
    assert w.voice.current == "idle" and not w.watch.talk_button.isChecked()


def test_push_to_talk_without_a_speech_model(qtbot, make_window) -> None:
    w = make_window(sd=FakeSoundDevice(np.zeros(16000, np.float32)))
    w.push_to_talk()
    assert w.voice.current == "recording" and w.watch.talk_button.isChecked()
    w.push_to_talk()
    qtbot.waitUntil(lambda: w.voice.current == "idle" and not w.watch.banner.isHidden(), timeout=LONG)
    assert "not downloaded yet" in w.watch.banner.text()


def test_spoken_question_reaches_the_session(qtbot, make_window, vtest_avi: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording → transcription → session.ask; the transcriber is replaced (no whisper weights here)."""
    from app.ui import speech_bridge

    class _Whisper:
        def __init__(self, path: Path) -> None:
            pass

        def transcribe(self, audio: np.ndarray) -> str:
            assert audio.size == 16000 * 2  # exactly what the microphone delivered
            return "is the water boiling"

        def close(self) -> None:
            pass

    monkeypatch.setattr(speech_bridge, "Transcriber", _Whisper)
    w = make_window(source=str(vtest_avi), sd=FakeSoundDevice(np.full(32000, 0.1, np.float32)))
    (w.voice.model_dir).mkdir(parents=True)
    (w.voice.model_dir / "ggml-base.en.bin").write_bytes(b"lmgg")
    configure(w, talk=-50)
    got = []
    w.worker.step.connect(got.append)
    w.start()
    qtbot.waitUntil(lambda: w.state == "running", timeout=LONG)
    w.push_to_talk()
    qtbot.waitUntil(lambda: w.voice.recorder.recording and w.voice.recorder._frames >= 32000, timeout=5000)
    w.push_to_talk()
    qtbot.waitUntil(lambda: any(r.question == "is the water boiling" for r in got), timeout=LONG)
    assert any(b.who == "you" and b.text == "is the water boiling" for b in w.watch.chat.bubbles)
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
