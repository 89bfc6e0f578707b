"""CameraSource: the real OpenCV read loop on a file, and a stand-in only for the webcam hardware."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from app.capture.base import CaptureError
from app.capture.camera import LOST, CameraSource

from .conftest import drain_in_thread, wait_for


def test_missing_camera_says_what_to_do():
    with pytest.raises(CaptureError, match=r"No camera at index 63.*camera:N"):
        CameraSource(63).open()


def test_real_read_loop_on_a_file_survives_end_of_stream_as_a_reconnect(vtest_avi, tmp_path):
    # OpenCV opens a path like a device: EOF looks exactly like an unplugged camera (read() fails).
    clip = tmp_path / "short.avi"
    cap = cv2.VideoCapture(str(vtest_avi))
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 40, (96, 72))
    originals = []
    for _ in range(6):
        ok, bgr = cap.read()
        small = cv2.resize(bgr, (96, 72), interpolation=cv2.INTER_AREA)
        w.write(small)
    w.release()
    cap.release()
    check = cv2.VideoCapture(str(clip))
    while (r := check.read())[0]:
        originals.append(cv2.cvtColor(r[1], cv2.COLOR_BGR2RGB))
    src = CameraSource(str(clip), retry_delays=(0.02,))
    src.open()
    frames = []
    try:
        for f in src.sample(0.03):
            frames.append(f)
            if src.reconnects >= 2 and len(frames) >= 8:
                break
    finally:
        src.close()
    assert src.losses >= 2 and src.reconnects >= 2
    assert all(any(np.array_equal(f.image, o) for o in originals) for f in frames)  # RGB pictures of the clip
    assert all(b.index == a.index + 1 + b.dropped for a, b in zip(frames, frames[1:], strict=False))


class FakeWebcam:
    """The hardware only: a plug the test can pull. Frames are BGR like a real driver's."""

    def __init__(self) -> None:
        self.plugged = threading.Event()
        self.plugged.set()
        self.opens = 0
        self.n = 0

    def open(self, device: int | str) -> FakeWebcam.Handle:
        self.opens += 1
        return FakeWebcam.Handle(self, self.plugged.is_set())

    class Handle:
        def __init__(self, cam: FakeWebcam, ok: bool) -> None:
            self.cam, self.ok = cam, ok

        def isOpened(self) -> bool:  # noqa: N802
            return self.ok

        def read(self):
            if not (self.ok and self.cam.plugged.is_set()):
                self.ok = False
                return False, None
            self.cam.n += 1
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0] = 200  # B
            img[..., 1] = self.cam.n % 256  # G: a counter
            return True, img

        def get(self, prop: int) -> float:
            return 100.0 if prop == cv2.CAP_PROP_FPS else 0.0

        def release(self) -> None:
            self.ok = False


def test_unplugged_camera_retries_and_resumes_without_raising():
    cam = FakeWebcam()
    src = CameraSource(0, opener=cam.open, retry_delays=(0.01, 0.02, 0.04))
    src.open()
    frames, errors, t = drain_in_thread(src, 0.02)
    try:
        assert wait_for(lambda: len(frames) >= 3)
        cam.plugged.clear()
        assert wait_for(lambda: src.status == LOST)
        opens_before = cam.opens
        assert wait_for(lambda: cam.opens >= opens_before + 3)  # it keeps trying, with backoff
        seen = len(frames)
        cam.plugged.set()
        assert wait_for(lambda: len(frames) >= seen + 3)
        assert src.status == "live"
    finally:
        src.close()
        t.join(10)
    assert not errors and not t.is_alive()
    assert src.losses == 1 and src.reconnects == 1
    assert frames[seen].dropped >= 1  # the outage shows up as skipped ticks
    assert all(b.index == a.index + 1 + b.dropped for a, b in zip(frames, frames[1:], strict=False))
    f = frames[-1]
    assert f.image.shape == (48, 64, 3) and f.image.flags["C_CONTIGUOUS"]
    assert f.image[0, 0, 0] == 0 and f.image[0, 0, 2] == 200  # BGR from the driver became RGB
    greens = [int(fr.image[0, 0, 1]) for fr in frames]
    assert len(set(greens)) == len(greens)  # every delivered picture is a new one, never a repeat


def test_close_ends_sampling_even_while_the_camera_is_lost():
    cam = FakeWebcam()
    src = CameraSource(0, opener=cam.open, retry_delays=(0.05,))
    src.open()
    cam.plugged.clear()
    assert wait_for(lambda: src.status == LOST)
    it = src.sample(0.01)
    threading.Timer(0.1, src.close).start()
    assert list(it) == []
    src.close()
    assert src.status == "closed"


def test_camera_that_opens_but_never_delivers_is_an_error():
    cam = FakeWebcam()
    cam.plugged.clear()

    def opener(device):
        handle = cam.open(device)
        handle.ok = True  # the device node opens, but reads fail (held by another app)
        return handle

    with pytest.raises(CaptureError, match="delivered no picture"):
        CameraSource(0, opener=opener, first_frame_timeout=0.1).open()
