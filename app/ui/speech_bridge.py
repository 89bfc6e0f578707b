"""Qt faces of the speech package: the speaker's events as signals, and push-to-talk questions.

The speaker calls back on its own thread; emitting a signal from there queues the slot onto the GUI
thread, so no widget is touched off the GUI thread. Recording runs in PortAudio's thread and the
transcription in a Python thread that talks to the whisper.cpp child process; the GUI only sees
``state``/``transcribed``/``problem`` signals.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.core.errors import describe
from app.core.settings import SpeechSettings
from app.speech.check import speech_output_problem
from app.speech.recorder import AudioUnavailable, PushToTalkRecorder
from app.speech.stt import (
    SpeechModelError,
    Transcriber,
    download_model,
    find_model,
    model_filename,
    models_dir,
)
from app.speech.tts import Speaker
from app.ui.background import BackgroundOp

log = logging.getLogger("duet.ui.speech")


class SpeechBridge(QObject):
    """Owns the :class:`Speaker`; reports "no speech engine" exactly once.

    :meth:`check_output` checks the way to the speakers (:mod:`app.speech.check`) when the window
    starts and each time the voice is turned on, and says what is missing once per such moment;
    while something is missing, replies are not handed to the engine at all (the espeak driver
    would run a missing ``aplay`` and print an error for every reply).
    """

    event = Signal(str, str)  # kind, detail
    unavailable = Signal(str)

    def __init__(self, settings: SpeechSettings, *, output_dir: Path | None = None,
                 driver: str | None = None) -> None:
        super().__init__()
        self._told = False
        self._told_output: str | None = None
        self.blocked: str | None = None  # why replies cannot be heard now; None when they can
        self.speaker = Speaker(driver=driver, output_dir=output_dir, voice=settings.voice, rate=settings.rate,
                               muted=settings.muted, on_event=self._on_event)

    def check_output(self) -> str | None:
        """Check the path to the user's ears; emit ``unavailable`` once for a new problem."""
        if self.speaker.output_dir is not None:  # speaking into files needs no sound card
            self.blocked = None
            return None
        self.blocked = speech_output_problem()
        if self.blocked is None:
            self._told_output = None
        elif self.blocked != self._told_output and not self.speaker.muted:
            self._told_output = self.blocked
            self.unavailable.emit(self.blocked)
        return self.blocked

    def _on_event(self, kind: str, detail: str) -> None:  # speaker thread
        if kind == "unavailable":
            if self._told:
                return
            self._told = True
            self.unavailable.emit(detail)
        self.event.emit(kind, detail)

    def say(self, text: str) -> None:
        if self.blocked is None:
            self.speaker.say(text)

    def apply(self, settings: SpeechSettings) -> None:
        self.speaker.voice = settings.voice
        self.speaker.rate = settings.rate
        self.set_muted(settings.muted)

    @property
    def muted(self) -> bool:
        return self.speaker.muted

    def set_muted(self, muted: bool) -> None:
        was_muted = self.speaker.muted
        self.speaker.set_muted(muted)
        if was_muted and not muted:  # the voice was just turned on: check again, and say so again
            self._told_output = None
            self.check_output()

    def close(self) -> None:
        self.speaker.close()


class VoiceInput(QObject):
    """Push-to-talk: ``toggle()`` starts recording, the next ``toggle()`` stops and transcribes."""

    state = Signal(str)  # idle | recording | transcribing | downloading
    transcribed = Signal(str)
    problem = Signal(str)
    download_progress = Signal(object, object)  # bytes done, total (may exceed 2**31)

    def __init__(self, settings: SpeechSettings, *, recorder: PushToTalkRecorder | None = None,
                 model_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.model_dir = model_dir or models_dir()
        self.recorder = recorder or PushToTalkRecorder(settings.input_device or None)
        self._transcriber: Transcriber | None = None
        self._busy = threading.Lock()
        self.current = "idle"

    def _set(self, state: str) -> None:
        self.current = state
        self.state.emit(state)

    def toggle(self) -> None:
        if self.current == "recording":
            self.stop()
        elif self.current == "idle":
            self.start()

    def start(self) -> None:
        try:
            self.recorder.start()
        except AudioUnavailable as e:
            self.problem.emit(str(e))
            self._set("idle")
            return
        self._set("recording")

    def stop(self) -> None:
        audio = self.recorder.stop()
        self._set("transcribing")
        BackgroundOp(self, lambda: self._transcribe(audio), failure=self._failed,
                     finally_=lambda: self._set("idle"), name="duet-stt").run()

    def model_path(self) -> Path | None:
        return find_model(self.settings.stt_model, self.model_dir)

    def _transcribe(self, audio: object) -> None:
        """Worker thread: one recording to text; failures reach :meth:`_failed` on the GUI thread."""
        with self._busy:
            if self._transcriber is None:
                path = self.model_path()
                if path is None:
                    raise SpeechModelError(
                        f"The speech model {model_filename(self.settings.stt_model)} is not downloaded yet: "
                        "Settings › Speech › Download. Until then, type your question.")
                self._transcriber = Transcriber(path)
            text = self._transcriber.transcribe(audio)  # type: ignore[arg-type]
        if text:
            self.transcribed.emit(text)
        else:
            self.problem.emit("Nothing was heard; hold the talk key a little longer and speak up.")

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, SpeechModelError):
            log.error("speech input failed", exc_info=(type(exc), exc, exc.__traceback__))
        self.problem.emit(describe(exc))

    def download(self) -> None:
        """Fetch the configured whisper model in the background."""
        self._set("downloading")
        BackgroundOp(self, lambda: download_model(
            self.settings.stt_model, self.model_dir,
            progress=lambda done, total: self.download_progress.emit(done, total)),
            failure=self._failed, finally_=lambda: self._set("idle"), name="duet-stt-download").run()

    def close(self) -> None:
        if self.recorder.recording:
            self.recorder.stop()
        with self._busy:
            if self._transcriber is not None:
                self._transcriber.close()
                self._transcriber = None
