"""A video file as a frame source: deterministic for evaluation, or paced to the clock for narration.

Frames are picked by decoding *sequentially* and reading each frame's presentation time, never by
seeking: OpenCV's seek lands on keyframes or drifts by a frame depending on codec and container,
which would make an evaluation run differ between machines. Variable-frame-rate files (tree.avi has
68 real frames spread over 444 nominal slots) are why we trust timestamps over ``index / fps``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from app.capture.base import CaptureError, FrameSource, SourceHealth
from app.capture.color import to_rgb
from app.capture.pacing import TickClock
from app.core.types import Frame

# Consecutive failed grabs before we call it the end of the file. OpenCV reports a packet the
# decoder rejects as a failed grab and carries on with the next one, so one failure is not EOF;
# at a real EOF each extra grab returns at once, so a generous limit costs nothing.
MAX_CONSECUTIVE_FAILURES = 64
_EPS = 1e-6
_STILL_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def open_video_capture(path: str) -> cv2.VideoCapture | None:
    """FFmpeg first: CAP_ANY may route a name like ``img_%02d.png`` to the image-sequence backend."""
    for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        cap = cv2.VideoCapture(path, api)
        if cap.isOpened():
            return cap
        cap.release()
    return None


def check_video_path(path: Path) -> None:
    """Say precisely why a path is not a playable file before OpenCV gives its one-bit answer."""
    if not path.exists():
        raise CaptureError(f"Video file not found: {path}")
    if path.is_dir():
        raise CaptureError(f"{path} is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise CaptureError(f"Video file {path} cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise CaptureError(f"Video file {path} is empty (0 bytes)")
    if path.suffix.lower() in _STILL_IMAGE_SUFFIXES:
        raise CaptureError(f"{path} is a still image, not a video; use a video file, the screen or a camera")


class _SequentialDecoder:
    """Decodes forward only and answers "which frame was showing at time t?" for increasing t."""

    def __init__(self, cap: cv2.VideoCapture, fps: float) -> None:
        self._cap = cap
        self._frame_dur = 1.0 / fps if fps > 0 else 0.04
        self._prev: tuple[float, np.ndarray] | None = None  # last frame with pts ≤ the last asked t
        self._ahead: tuple[float, np.ndarray] | None = None  # first frame with pts > it
        self._last_pts = -1.0
        self.eof = False
        self.failed = 0  # frames the decoder rejected and we skipped
        self.position = 0.0  # seconds of video decoded so far

    def _read_next(self) -> tuple[float, np.ndarray] | None:
        fails = 0
        while fails < MAX_CONSECUTIVE_FAILURES:
            if not self._cap.grab():
                fails += 1
                continue
            ok, image = self._cap.retrieve()
            pts_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if not ok or image is None or image.size == 0:
                fails += 1
                continue
            self.failed += fails  # failures followed by a good frame were frames, not the end
            pts = pts_ms / 1000.0
            if not (pts >= 0 and pts > self._last_pts):  # backend without usable timestamps
                pts = self._last_pts + self._frame_dur if self._last_pts >= 0 else 0.0
            self._last_pts = pts
            self.position = pts
            return pts, to_rgb(image)
        self.eof = True
        return None

    @property
    def end(self) -> float:
        """Video duration as far as decoded: the last frame stays on screen for one frame period."""
        return self._last_pts + self._frame_dur

    def frame_at(self, t: float) -> np.ndarray | None:
        """The frame showing at time ``t`` (latest with pts ≤ t); None once ``t`` is past the end."""
        while not self.eof and (self._ahead is None or self._ahead[0] <= t + _EPS):
            if self._ahead is not None:
                self._prev = self._ahead
            self._ahead = self._read_next()
        if self.eof and self._ahead is not None:  # keep the last frame reachable after EOF
            if self._ahead[0] <= t + _EPS:
                self._prev, self._ahead = self._ahead, None
        if self.eof and t >= self.end - _EPS:
            return None
        if self._prev is None:  # t before the first timestamp: show the first frame
            return self._ahead[1] if self._ahead is not None else None
        return self._prev[1]


class VideoFileSource(FrameSource):
    """Frames of a video file at t = interval, 2·interval, … (video time).

    ``realtime=False`` (evaluation): every tick, as fast as consumed, identical on every run.
    ``realtime=True`` (narration): ticks follow the wall clock; a late consumer gets the newest tick
    with ``Frame.dropped`` set, never a backlog. Each ``sample()`` call starts from the beginning.
    """

    def __init__(self, path: str | os.PathLike[str], realtime: bool = False) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.live = realtime
        self.name = f"file:{self.path.name}"
        self.fps = 0.0
        self.frame_count = 0
        self._opened = False
        self._closed = False
        self._stop = threading.Event()
        self._decoder: _SequentialDecoder | None = None
        self._cap: cv2.VideoCapture | None = None
        self._ended = False
        self._clock: TickClock | None = None  # the real-time pass's clock, held by pause()
        self._hold = False  # pause() came before the pass's clock existed
        # The consumer iterates on a worker thread while the UI may call close(): releasing the
        # capture in the middle of a grab() would crash inside FFmpeg, so decoding and release share a lock.
        self._io = threading.Lock()

    def _new_capture(self) -> cv2.VideoCapture:
        cap = open_video_capture(str(self.path))
        if cap is None:
            raise CaptureError(
                f"{self.path} is not a video OpenCV can decode (unrecognised container or missing codec)")
        return cap

    def open(self) -> None:
        if self._opened:
            return
        check_video_path(self.path)
        cap = self._new_capture()
        probe = _SequentialDecoder(cap, cap.get(cv2.CAP_PROP_FPS))
        if probe.frame_at(0.0) is None:
            cap.release()
            raise CaptureError(f"{self.path} contains no decodable video frames")
        if probe.eof and probe._ahead is None:  # frame_at(0) read past the first frame and found nothing
            cap.release()
            raise CaptureError(f"{self.path} holds a single frame (a still image with a video name?); "
                               "Duet watches videos, the screen or a camera")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        cap.release()
        self._opened = True

    @property
    def skipped_frames(self) -> int:
        """Frames the decoder rejected in the current pass (corrupt packets), skipped over."""
        return self._decoder.failed if self._decoder else 0

    @property
    def status(self) -> str:
        if self._closed:
            return "closed"
        if not self._opened:
            return "not opened"
        dec = self._decoder
        state = "ended" if self._ended else ("playing" if dec else "ready")
        at = self.playing_at
        if at is not None and not self._ended:
            state += f" at {at:.1f} s"
        if dec is not None and dec.failed:
            state += f", {dec.failed} undecodable frame{'s' if dec.failed != 1 else ''} skipped"
        return state

    @property
    def playing_at(self) -> float | None:
        """The video time being played now (None before the first pass).

        In real time this is the pass's clock, not how far the decoder has read: the session takes frames
        only between the model's steps, so the decoder moves in jumps of whole ticks (39.1 → 42.6 s in
        0.7 s after a resume, then still while the model ran), while the clock runs with the wall clock,
        stands still while paused, and is what the in-app player is kept on. Read as fast as consumed
        (evaluation) there is no clock: the decoder's position is the time.
        """
        dec, clock = self._decoder, self._clock
        if dec is None:
            return None
        if self.realtime and clock is not None:
            end = dec.end if dec.eof else float("inf")
            return min(clock.elapsed, end)
        return dec.position

    @property
    def health(self) -> SourceHealth:
        if self._closed:
            return SourceHealth.CLOSED
        return SourceHealth.ENDED if self._ended else SourceHealth.OK

    def pause(self) -> bool:
        """Stop the video's clock: after :meth:`resume` playback continues from the same video time."""
        self._hold = True
        if self._clock is not None:
            self._clock.pause()
        return True

    def resume(self) -> None:
        self._hold = False
        if self._clock is not None:
            self._clock.resume()

    def sample(self, interval: float) -> Iterator[Frame]:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if self._closed:
            raise CaptureError(f"{self.path.name}: source is closed")
        if not self._opened:
            raise CaptureError(f"{self.path.name}: call open() before sample()")
        with self._io:
            if self._cap is not None:
                self._cap.release()
            self._cap = self._new_capture()
            self._decoder = dec = _SequentialDecoder(self._cap, self.fps)
        self._ended = False
        if self.realtime:
            yield from self._paced(dec, interval)
        else:
            yield from self._every_tick(dec, interval)
        self._ended = True

    def _too_short(self, dec: _SequentialDecoder, interval: float) -> CaptureError:
        return CaptureError(f"{self.path.name} is {dec.end:.2f} s long, shorter than one interval ({interval:g} s): "
                            "there is no frame to watch; use a shorter interval")

    def _every_tick(self, dec: _SequentialDecoder, interval: float) -> Iterator[Frame]:
        k = 1
        while not self._stop.is_set():
            image = self._decode(dec, k * interval)  # multiply, not accumulate: no drift over hours
            if image is None:
                if k == 1 and not self._stop.is_set():
                    raise self._too_short(dec, interval)
                return
            yield Frame(image=image, time=k * interval, index=k, source=self.name)
            k += 1

    def _paced(self, dec: _SequentialDecoder, interval: float) -> Iterator[Frame]:
        self._clock = clock = TickClock(interval, self._stop)
        if self._hold:
            clock.pause()
        first = True
        while (tick := clock.next()) is not None:
            image = self._decode(dec, tick.time)
            if image is None:
                if first and not self._stop.is_set():
                    raise self._too_short(dec, interval)
                return
            first = False
            yield Frame(image=image, time=tick.time, index=tick.index, source=self.name, dropped=tick.dropped)

    def _decode(self, dec: _SequentialDecoder, t: float) -> np.ndarray | None:
        with self._io:
            if self._stop.is_set():
                return None
            return dec.frame_at(t)

    def close(self) -> None:
        self._stop.set()
        self._closed = True
        with self._io:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
