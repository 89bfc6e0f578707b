"""A stand-in for the sounddevice module: no microphone exists on a CI machine, so this one plays a
WAV file into the real recorder's callback from a thread, in PortAudio-sized blocks."""

from __future__ import annotations

import threading

import numpy as np


class PortAudioError(Exception):
    pass


class FakeInputStream:
    def __init__(self, owner: FakeSoundDevice, samplerate: int, channels: int, dtype: str, device: object,
                 callback: object) -> None:
        self.owner, self.samplerate, self.callback = owner, samplerate, callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        audio, block = self.owner.audio, 1024
        for i in range(0, len(audio), block):
            if self._stop.is_set():
                return
            chunk = audio[i:i + block].reshape(-1, 1)
            self.callback(chunk, len(chunk), None, None)  # type: ignore[operator]
        self.owner.fed_all.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        pass


class FakeSoundDevice:
    PortAudioError = PortAudioError

    def __init__(self, audio: np.ndarray | None = None, *, has_input: bool = True) -> None:
        self.audio = audio if audio is not None else np.zeros(16000, np.float32)
        self.has_input = has_input
        self.fed_all = threading.Event()

    def query_devices(self, device: object = None, kind: str | None = None) -> object:
        if not self.has_input:
            if kind == "input":
                raise PortAudioError("Error querying device -1")
            return []
        info = {"name": "Fake USB microphone", "max_input_channels": 1, "default_samplerate": 16000.0}
        return info if kind == "input" else [info]

    def InputStream(self, **kwargs: object) -> FakeInputStream:  # noqa: N802 - sounddevice's name
        if not self.has_input:
            raise PortAudioError("No input device")
        return FakeInputStream(self, **kwargs)  # type: ignore[arg-type]
