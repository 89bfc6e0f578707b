"""Push-to-talk recording with sounddevice: press to start, press again (or release) to stop.

sounddevice is imported lazily and every PortAudio failure becomes :class:`AudioUnavailable` with a
sentence a user can act on: without libportaudio ``import sounddevice`` itself raises OSError, and on
a machine with no microphone opening the stream raises PortAudioError (docs/desktop.md §2.2).
Audio is captured as 16 kHz mono float32, what whisper.cpp expects, so nothing is resampled later.
"""

from __future__ import annotations

import threading
from types import ModuleType

import numpy as np

from app.core.errors import ResourceError

SAMPLE_RATE = 16_000
MAX_SECONDS = 60.0


class AudioUnavailable(ResourceError):
    """No way to record: PortAudio missing, no input device, or the device refused to open."""


def load_sounddevice() -> ModuleType:
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise AudioUnavailable(f"Audio input is unavailable: {e}. On Linux install PortAudio "
                               "(apt install libportaudio2).") from e
    return sounddevice


def input_devices(sd: ModuleType | None = None) -> list[str]:
    """Names of the devices that can record (empty when there are none or PortAudio is missing)."""
    try:
        sd = sd or load_sounddevice()
        return [d["name"] for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]
    except Exception:
        return []


class PushToTalkRecorder:
    """Collects microphone blocks between :meth:`start` and :meth:`stop` (PortAudio calls back on its own thread)."""

    def __init__(self, device: str | int | None = None, *, samplerate: int = SAMPLE_RATE,
                 max_seconds: float = MAX_SECONDS, sd: ModuleType | None = None) -> None:
        self.device = device or None
        self.samplerate = samplerate
        self.max_frames = int(max_seconds * samplerate)
        self._sd = sd
        self._lock = threading.Lock()
        self._blocks: list[np.ndarray] = []
        self._frames = 0
        self._stream = None
        self.overflowed = False

    @property
    def recording(self) -> bool:
        return self._stream is not None

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        if status:
            self.overflowed = True
        with self._lock:
            if self._frames >= self.max_frames:
                return  # keep the first minute; a stuck push-to-talk must not eat memory
            self._blocks.append(np.array(indata[:, 0], dtype=np.float32, copy=True))
            self._frames += frames

    def start(self) -> None:
        if self._stream is not None:
            return
        sd = self._sd or load_sounddevice()
        with self._lock:
            self._blocks, self._frames = [], 0
        try:
            if self.device is None:
                sd.query_devices(kind="input")  # raises when the system has no default input at all
            stream = sd.InputStream(samplerate=self.samplerate, channels=1, dtype="float32",
                                    device=self.device, callback=self._callback)
            stream.start()
        except Exception as e:  # PortAudioError, ValueError("No input device matching …")
            raise AudioUnavailable(f"No microphone could be opened ({e}). Connect one, or pick another input "
                                   "device in Settings › Speech; you can still type questions.") from e
        self._stream = stream

    def stop(self) -> np.ndarray:
        """Stop and return everything recorded (float32, mono, ``samplerate`` Hz)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:
                pass  # the device vanished mid-recording: keep what arrived
        with self._lock:
            blocks, self._blocks = self._blocks, []
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
