"""VideoFileSource on Debian's real test videos, checked against an independent sequential decode."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.capture.base import CaptureError
from app.capture.video import VideoFileSource


def decode_all(path: Path, keep=lambda i: True) -> list[tuple[float, int, np.ndarray]]:
    """Plain OpenCV: (pts seconds, frame number, RGB image) for the frames ``keep`` selects."""
    cap = cv2.VideoCapture(str(path))
    out = []
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if keep(i):
            out.append((cap.get(cv2.CAP_PROP_POS_MSEC) / 1000, i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        i += 1
    cap.release()
    return out


def test_evaluation_mode_yields_the_frame_at_every_tick(vtest_avi):
    src = VideoFileSource(vtest_avi, realtime=False)
    src.open()
    frames = list(src.sample(1.0))
    src.close()
    # vtest: 795 frames at 10 fps (pts 0.0 … 79.4 s) → ticks 1 … 79 s
    assert [f.time for f in frames] == [float(k) for k in range(1, 80)]
    assert [f.index for f in frames] == list(range(1, 80))
    assert all(f.dropped == 0 and f.source == "file:vtest.avi" for f in frames)
    oracle = {i: img for _, i, img in decode_all(vtest_avi, keep=lambda i: i % 10 == 0)}
    for f in frames:
        assert f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8 and f.image.flags["C_CONTIGUOUS"]
        assert np.array_equal(f.image, oracle[int(f.time * 10)])  # RGB, frame at t exactly
    assert not np.array_equal(frames[5].image, frames[5].image[..., ::-1])  # not a grey clip: order matters
    assert src.status == "closed"


def test_variable_frame_rate_uses_timestamps_not_frame_numbers(tree_avi):
    # tree.avi declares 15 fps and 444 frames but holds 68 frames spread over ~29.6 s.
    oracle = decode_all(tree_avi)
    with VideoFileSource(tree_avi) as src:
        frames = list(src.sample(1.0))
    end = oracle[-1][0] + 1 / 15
    assert len(frames) == math.floor(end)
    for f in frames:
        pts, _, img = max((o for o in oracle if o[0] <= f.time + 1e-6), key=lambda o: o[0])
        assert np.array_equal(f.image, img), f"tick {f.time}: expected the frame shown since {pts:.3f} s"
    # tick 1 s shows the second frame (pts 0.733 s), where index/fps would have picked frame 15
    assert np.array_equal(frames[0].image, oracle[1][2])


def test_evaluation_is_deterministic_and_restarts(tree_avi):
    with VideoFileSource(tree_avi) as src:
        a = [(f.time, f.image.tobytes()) for f in src.sample(0.7)]
        b = [(f.time, f.image.tobytes()) for f in src.sample(0.7)]
    assert a == b and len(a) == 42


def test_frames_are_read_only_so_a_shared_picture_cannot_be_corrupted(tree_avi):
    with VideoFileSource(tree_avi) as src:
        f = next(iter(src.sample(0.1)))
    with pytest.raises(ValueError):
        f.image[0, 0, 0] = 1


def _mjpeg_clip(vtest_avi: Path, out: Path, n: int = 40, corrupt: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Re-encode n real frames as MJPEG (one JPEG per AVI chunk) and zero some chunks' payloads."""
    src = decode_all(vtest_avi, keep=lambda i: i < n)
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (192, 144))
    for _, _, rgb in src:
        w.write(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (192, 144), interpolation=cv2.INTER_AREA))
    w.release()
    data = bytearray(out.read_bytes())
    starts = [i for i in range(len(data) - 3) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == n
    for k in corrupt:
        s = starts[k]
        size = int.from_bytes(data[s - 4:s], "little")  # AVI chunk header: fourcc, size, payload
        data[s:s + size] = bytes(size)
    out.write_bytes(bytes(data))
    return [img for _, _, img in decode_all(out)]


def test_undecodable_frames_are_skipped_and_counted(vtest_avi, tmp_path):
    intact = _mjpeg_clip(vtest_avi, tmp_path / "ok.avi")
    _mjpeg_clip(vtest_avi, tmp_path / "bad.avi", corrupt=(10, 11, 25))
    with VideoFileSource(tmp_path / "bad.avi") as src:
        frames = list(src.sample(0.1))
        assert src.skipped_frames == 3
        assert "3 undecodable frames skipped" in src.status
        assert src.status.startswith("ended")
    assert len(frames) == 39  # ticks 0.1 … 3.9 s: the stream went on to the end
    # a tick whose frame was lost shows the last good frame before it
    expect = {10: 9, 11: 9, 25: 24}
    for f in frames:
        k = round(f.time * 10)
        assert np.array_equal(f.image, intact[expect.get(k, k)]), f"tick {f.time}"
    assert all(not np.array_equal(intact[k], intact[v]) for k, v in expect.items())  # the check can tell


def test_realtime_slow_consumer_gets_newest_frame_and_drop_count(vtest_avi):
    interval = 0.05
    with VideoFileSource(vtest_avi) as ref:
        reference = {f.index: f.image for f in ref.sample(interval) if f.index <= 120}
    with VideoFileSource(vtest_avi, realtime=True) as src:
        assert src.live
        it = src.sample(interval)
        first = next(it)
        t_first = time.monotonic()
        got = [first]
        for _ in range(4):
            time.sleep(3 * interval)  # the model is slower than real time
            asked = time.monotonic()
            f = next(it)
            assert f.dropped >= 2
            assert f.index >= 1 + math.floor((asked - t_first) / interval)  # no backlog: the due tick
            got.append(f)
    for a, b in zip(got, got[1:], strict=False):
        assert b.index == a.index + 1 + b.dropped
    for f in got:
        assert f.time == pytest.approx(f.index * interval)
        assert np.array_equal(f.image, reference[f.index])  # same picture evaluation mode shows at that tick


def test_close_from_another_thread_ends_a_paced_iterator(tree_avi):
    src = VideoFileSource(tree_avi, realtime=True)
    src.open()
    it = src.sample(30.0)
    threading.Timer(0.1, src.close).start()
    assert list(it) == []
    src.close()  # idempotent
    assert src.status == "closed"


def _text_file(p: Path) -> Path:
    (p / "notes.avi").write_text("not a video " * 100)
    return p / "notes.avi"


def _empty_file(p: Path) -> Path:
    (p / "empty.mp4").write_bytes(b"")
    return p / "empty.mp4"


def _still_image(p: Path) -> Path:
    cv2.imwrite(str(p / "still.png"), np.zeros((8, 8, 3), np.uint8))
    return p / "still.png"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.mp4", "Video file not found"),
    (lambda p: p, "is a directory"),
    (_empty_file, "is empty"),
    (_text_file, "not a video OpenCV can decode"),
    (_still_image, "still image"),
])
def test_unusable_files_raise_capture_error_naming_file_and_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CaptureError, match=message) as info:
        VideoFileSource(path).open()
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path, tree_avi, monkeypatch):
    p = tmp_path / "locked.avi"
    p.write_bytes(tree_avi.read_bytes())
    p.chmod(0)
    if os.geteuid() == 0:  # root reads any file: answer as the file's owner would (its mode bits)
        real = os.access

        def access(path, mode, **kw):
            if Path(path) == p and mode == os.R_OK:
                return bool(os.stat(path).st_mode & 0o400)
            return real(path, mode, **kw)

        monkeypatch.setattr(os, "access", access)
    with pytest.raises(CaptureError, match="permission denied"):
        VideoFileSource(p).open()


def test_misuse_is_reported(tree_avi):
    src = VideoFileSource(tree_avi)
    with pytest.raises(CaptureError, match="open"):
        next(iter(src.sample(1.0)))
    src.open()
    with pytest.raises(ValueError, match="interval"):
        next(iter(src.sample(0)))
