"""A webcam (or any stream OpenCV opens by index, device path or URL) as a live frame source.

A reader thread drains the device continuously and keeps only the newest picture: drivers buffer
several frames, so reading only once per 1–2 s tick would hand the model a stale one. The same
thread owns the capture object for its whole life (open → read → release), because releasing a
VideoCapture while another thread is blocked in read() is undefined behaviour in most backends.
"""

from __future__ import annotations

import glob
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import cv2
import numpy as np

from app.capture.base import CaptureError, FrameSource, SourceHealth
from app.capture.color import to_rgb
from app.capture.pacing import TickClock
from app.core.types import Frame

LOST = "camera lost, retrying…"
DEFAULT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # then stays at the last one


class VideoDevice(Protocol):
    """The slice of ``cv2.VideoCapture`` the camera needs (lets tests stand in for the hardware)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


def open_cv_device(device: int | str) -> VideoDevice:
    cap = cv2.VideoCapture(device)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # best effort: fewer stale frames where supported
    return cap


def _missing_camera_message(device: int | str) -> str:
    if isinstance(device, str):
        return (f"Could not open camera stream {device!r}: check the device path or URL, "
                "and that nothing else is using it.")
    msg = f"No camera at index {device}: OpenCV could not open it. Check that a webcam is plugged in and not in use by another application"
    if sys.platform.startswith("linux"):
        nodes = sorted(glob.glob("/dev/video*"))
        if nodes:
            msg += (f" (video devices present: {', '.join(nodes)}; if one is yours and access is denied, "
                    "add your user to the 'video' group).")
        else:
            msg += " (no /dev/video* device exists: is the webcam connected and its driver loaded?)."
    elif sys.platform == "darwin":
        msg += " (allow camera access in System Settings › Privacy & Security › Camera)."
    elif sys.platform == "win32":
        msg += " (allow camera access in Settings › Privacy › Camera)."
    else:
        msg += "."
    return msg + " Try another index with camera:N."


class CameraSource(FrameSource):
    """Samples the newest camera picture every ``interval`` seconds of wall-clock time.

    If the device disappears mid-stream (unplugged, driver reset) the iterator does not raise: the
    status reads ``"camera lost, retrying…"``, reopening is retried with backoff, and frames resume
    when it comes back (the first one carries the ticks missed meanwhile in ``dropped``).
    """

    live = True

    def __init__(self, device: int | str = 0, *,
                 opener: Callable[[int | str], VideoDevice] = open_cv_device,
                 retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 first_frame_timeout: float = 5.0) -> None:
        self.device = device
        self.name = f"camera:{device}"
        self._opener = opener
        self._retry_delays = tuple(retry_delays) or (1.0,)
        self._first_frame_timeout = first_frame_timeout
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._newest: np.ndarray | None = None
        self._seq = 0  # bumps with every picture the reader stores
        self._status = "not opened"
        self._thread: threading.Thread | None = None
        self._opened = False
        self.losses = 0  # times the device was lost
        self.reconnects = 0  # times it came back

    # ---- the reader thread ----------------------------------------------------------------
    def _try_open(self) -> VideoDevice | None:
        try:
            cap = self._opener(self.device)
        except Exception:  # a backend may throw instead of returning a closed capture
            return None
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _store(self, image: np.ndarray) -> None:
        rgb = to_rgb(image)
        with self._cond:
            self._newest = rgb
            self._seq += 1
            self._cond.notify_all()

    def _read_loop(self, cap: VideoDevice | None) -> None:
        attempt = 0
        period = 0.0
        last_read = 0.0
        try:
            while not self._stop.is_set():
                if cap is None:
                    self._status = LOST
                    if self._stop.wait(self._retry_delays[min(attempt, len(self._retry_delays) - 1)]):
                        return
                    cap = self._try_open()
                    attempt = 0 if cap is not None else attempt + 1
                    if cap is not None:
                        self.reconnects += 1
                        period = self._frame_period(cap)
                    continue
                if not period:
                    period = self._frame_period(cap)
                ok, image = cap.read()
                if not ok or image is None or image.size == 0:
                    cap.release()
                    cap = None
                    self.losses += 1
                    with self._cond:  # the last picture is stale now: never hand it out as current
                        self._newest = None
                    continue
                self._status = "live"
                self._store(image)
                # A real camera blocks in read() for a frame period; a file or a fake would spin,
                # so pace to the reported rate to leave the CPU to the model.
                now = time.monotonic()
                if now - last_read < period:
                    self._stop.wait(period - (now - last_read))
                last_read = time.monotonic()
        finally:
            if cap is not None:
                cap.release()

    @staticmethod
    def _frame_period(cap: VideoDevice) -> float:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        return 1.0 / fps if 1.0 <= fps <= 240.0 else 1.0 / 30.0

    # ---- FrameSource ------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        if self._stop.is_set():
            raise CaptureError(f"{self.name}: source is closed")
        cap = self._try_open()
        if cap is None:
            raise CaptureError(_missing_camera_message(self.device))
        deadline = time.monotonic() + self._first_frame_timeout
        while True:  # the first reads of some webcams come back empty while they warm up
            ok, image = cap.read()
            if ok and image is not None and image.size:
                break
            if time.monotonic() > deadline:
                cap.release()
                raise CaptureError(
                    f"{self.name} opened but delivered no picture within {self._first_frame_timeout:g} s; "
                    "another application may be holding it, or it needs a different index.")
            time.sleep(0.05)
        self._store(image)
        self._status = "live"
        self._opened = True
        self._thread = threading.Thread(target=self._read_loop, args=(cap,), name=f"duet-{self.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def health(self) -> SourceHealth:
        return SourceHealth.LOST if self._status == LOST else super().health

    def _newer_than(self, seq: int) -> tuple[np.ndarray, int] | None:
        """Block until a picture newer than ``seq`` exists (the camera may be reconnecting)."""
        with self._cond:
            self._cond.wait_for(lambda: (self._newest is not None and self._seq > seq) or self._stop.is_set())
            if self._stop.is_set() or self._newest is None:
                return None
            return self._newest, self._seq

    def sample(self, interval: float) -> Iterator[Frame]:
        if not self._opened:
            raise CaptureError(f"{self.name}: call open() before sample()")
        clock = TickClock(interval, self._stop)
        seen = 0
        while (tick := clock.next()) is not None:
            got = self._newer_than(seen)
            if got is None:
                return
            image, seen = got
            tick = clock.catch_up(tick)  # waiting for a reconnect may have spanned several ticks
            yield Frame(image=image, time=tick.time, index=tick.index, source=self.name, dropped=tick.dropped)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._status = "closed"
