"""Source strings: every accepted form, the errors for bad ones, and open_source end to end."""

from __future__ import annotations

import pytest

from app.capture.base import CaptureError
from app.capture.parse import SourceSpec, SourceSpecError, open_source, parse_spec
from app.capture.screen import ScreenSource
from app.capture.video import VideoFileSource


@pytest.mark.parametrize("text, expected", [
    ("clip.mp4", SourceSpec("file", path="clip.mp4")),
    ("  /videos/a b.mkv ", SourceSpec("file", path="/videos/a b.mkv")),
    ("C:\\videos\\clip.mp4", SourceSpec("file", path="C:\\videos\\clip.mp4")),  # drive letter, not a kind
    ("file:camera", SourceSpec("file", path="camera")),
    ("camera", SourceSpec("camera", device=0)),
    ("camera:2", SourceSpec("camera", device=2)),
    ("CAMERA:/dev/video4", SourceSpec("camera", device="/dev/video4")),
    ("camera:rtsp://cam.local/stream", SourceSpec("camera", device="rtsp://cam.local/stream")),
    ("screen", SourceSpec("screen")),
    ("screen:0", SourceSpec("screen", monitor=0)),
    ("screen:2", SourceSpec("screen", monitor=2)),
    ("region:-10, 20,300,200", SourceSpec("region", region=(-10, 20, 300, 200))),
    ("window:Mozilla Firefox", SourceSpec("window", title="Mozilla Firefox")),
    ("window:a:b", SourceSpec("window", title="a:b")),
])
def test_accepted_specs(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty source"),
    ("camera:", "needs an index"),
    ("camera:-1", "≥ 0"),
    ("screen:left", "monitor number"),
    ("region:1,2,3", "four integers"),
    ("region:1,2,x,4", "four integers"),
    ("region:0,0,0,10", "must be > 0"),
    ("window:", "needs a title"),
    ("scren:1", "unknown source kind 'scren'"),
    ("file:", "needs a path"),
])
def test_bad_specs_are_explained(text, message):
    with pytest.raises(SourceSpecError, match=message) as info:
        parse_spec(text)
    assert isinstance(info.value, CaptureError) and isinstance(info.value, ValueError)


def test_open_source_file_evaluation_and_realtime(tree_avi):
    src = open_source(str(tree_avi), realtime=False)
    assert isinstance(src, VideoFileSource) and not src.live
    with src:  # open() again is a no-op
        assert len(list(src.sample(5.0))) == 5
    live = open_source(f"file:{tree_avi}", realtime=True)
    assert isinstance(live, VideoFileSource) and live.live
    live.close()


def test_open_source_reports_unopenable_targets(tmp_path):
    with pytest.raises(CaptureError, match="Video file not found"):
        open_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(CaptureError, match="No camera at index 63"):
        open_source("camera:63")


def test_open_source_screen_kinds(display):
    hidden = []

    class Hook:
        def hide(self) -> None:
            hidden.append(1)

        def restore(self) -> None:
            pass

    for spec in ("screen", "screen:1", "region:0,0,64,32"):
        src = open_source(spec, exclude=Hook())
        assert isinstance(src, ScreenSource)
        src.close()
    assert len(hidden) == 3  # the hook reached the source (each open() does one test grab)
