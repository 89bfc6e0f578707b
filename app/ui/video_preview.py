"""A video file played in the app: QtMultimedia draws it smoothly, the session keeps its own decoder.

Two decoders on purpose. The session's source is ``VideoFileSource(realtime=True)`` (OpenCV, on the
session thread): its frames and their video times are what the model answers, identically to the
CLI and the tests. QMediaPlayer (FFmpeg backend) only *shows* the file at its own frame rate, with
sound. Both start together and run on the wall clock; each sampled frame carries its video time,
and when the player drifts more than ``MAX_DRIFT_S`` from it the player is moved there, so a reply
appears while its moment is on screen. Pausing Duet pauses the *watching*, not the film.

When QtMultimedia is missing or fails (no FFmpeg plugin, an unsupported codec), ``available`` is
False and the main window falls back to drawing the session's own frames in the preview.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, QUrl, Signal, Slot
from PySide6.QtGui import QImage

log = logging.getLogger("duet.ui.video")
MAX_DRIFT_S = 0.6
MAX_FPS = 15.0  # the preview is small; more would only cost GUI time


class PlayerPreview(QObject):
    image = Signal(QImage)
    failed = Signal(str)

    def __init__(self, *, sound: bool = True) -> None:
        super().__init__()
        self.available = False
        self.active = False
        self.frames_shown = 0
        self.seeks = 0
        self._last_emit = 0.0
        try:
            from PySide6.QtMultimedia import QAudioOutput, QMediaPlayer, QVideoSink
        except ImportError as e:  # a build without QtMultimedia
            log.info("QtMultimedia unavailable (%s); the preview shows sampled frames", e)
            return
        self.player = QMediaPlayer(self)
        self.sink = QVideoSink(self)
        self.player.setVideoSink(self.sink)
        self.audio = QAudioOutput(self) if sound else None
        if self.audio is not None:
            self.player.setAudioOutput(self.audio)
        self.sink.videoFrameChanged.connect(self._on_frame)
        self.player.errorOccurred.connect(self._on_error)
        self.available = True

    def play(self, path: Path) -> None:
        if not self.available:
            return
        self.player.setSource(QUrl.fromLocalFile(str(path)))
        self.player.play()
        self.active = True
        self.frames_shown = 0
        self.seeks = 0

    def stop(self) -> None:
        if self.available and self.active:
            self.player.stop()
        self.active = False

    def pause(self) -> None:
        """Hold the picture with the session (the model's clock stops too)."""
        if self.available and self.active:
            self.player.pause()

    def resume(self) -> None:
        if self.available and self.active:
            self.player.play()

    def set_muted(self, muted: bool) -> None:
        if self.available and self.audio is not None:
            self.audio.setMuted(muted)

    def sync(self, video_time: float) -> None:
        """Keep the picture within MAX_DRIFT_S of the frame the model is looking at."""
        if not self.active:
            return
        drift = self.player.position() / 1000 - video_time
        if abs(drift) > MAX_DRIFT_S:
            self.player.setPosition(int(video_time * 1000))
            self.seeks += 1

    @property
    def position(self) -> float:
        return self.player.position() / 1000 if self.available else 0.0

    @Slot(object)
    def _on_frame(self, frame: object) -> None:
        now = time.monotonic()
        if not self.active or now - self._last_emit < 1 / MAX_FPS:
            return
        img = frame.toImage()  # type: ignore[attr-defined]
        if img.isNull():
            return
        self._last_emit = now
        self.frames_shown += 1
        self.image.emit(img)

    @Slot(object, str)
    def _on_error(self, _error: object, message: str) -> None:
        log.warning("video preview failed: %s", message)
        self.active = False
        self.failed.emit(message)
