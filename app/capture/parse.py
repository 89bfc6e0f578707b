"""Turning the user's source string (CLI argument, settings field) into an open FrameSource.

Grammar: ``FILE`` | ``file:FILE`` | ``camera`` | ``camera:N`` | ``camera:DEVICE_OR_URL`` | ``screen`` |
``screen:N`` | ``region:X,Y,W,H`` | ``window:TITLE``. ``file:`` exists for a video literally named
"camera"; anything else with an unknown ``word:`` prefix that is not an existing file is reported as
a typo rather than as a missing file, because "scren:1" is far likelier than a file by that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.capture.base import CaptureError, FrameSource
from app.core.errors import InputError

Kind = Literal["file", "camera", "screen", "region", "window"]
USAGE = "expected FILE, camera, camera:N, screen, screen:N, region:X,Y,W,H or window:TITLE"


class SourceSpecError(CaptureError, InputError):
    """The source string itself is malformed (as opposed to naming something that cannot be opened)."""


@dataclass(frozen=True)
class SourceSpec:
    kind: Kind
    path: str = ""
    device: int | str = 0
    monitor: int | None = None
    region: tuple[int, int, int, int] | None = None
    title: str = ""


def parse_spec(spec: str) -> SourceSpec:
    """Parse without touching any device, so a settings dialog can validate as the user types."""
    text = spec.strip()
    if not text:
        raise SourceSpecError(f"empty source; {USAGE}")
    head, sep, rest = text.partition(":")
    key = head.lower()
    if key == "file" and sep:
        if not rest:
            raise SourceSpecError("file: needs a path, e.g. file:clip.mp4")
        return SourceSpec("file", path=rest)
    if key == "camera":
        if not sep:
            return SourceSpec("camera", device=0)
        if not rest.strip():
            raise SourceSpecError("camera: needs an index or a device, e.g. camera:1")
        if re.fullmatch(r"\d+", rest.strip()):
            return SourceSpec("camera", device=int(rest))
        if re.fullmatch(r"-\d+", rest.strip()):
            raise SourceSpecError(f"camera index must be ≥ 0, got {rest.strip()}")
        return SourceSpec("camera", device=rest)  # a device path or a stream URL
    if key == "screen":
        if not sep:
            return SourceSpec("screen")
        if not re.fullmatch(r"\d+", rest.strip()):
            raise SourceSpecError(f"screen:N needs a monitor number (0 = all monitors), got {rest!r}")
        return SourceSpec("screen", monitor=int(rest))
    if key == "region":
        parts = [p.strip() for p in rest.split(",")]
        if not sep or len(parts) != 4 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
            raise SourceSpecError(f"region needs four integers X,Y,W,H (e.g. region:0,0,800,600), got {rest!r}")
        x, y, w, h = map(int, parts)
        if w <= 0 or h <= 0:
            raise SourceSpecError(f"region width and height must be > 0, got {w}×{h}")
        return SourceSpec("region", region=(x, y, w, h))
    if key == "window":
        if not sep or not rest.strip():
            raise SourceSpecError("window: needs a title (or part of it), e.g. window:Firefox")
        return SourceSpec("window", title=rest.strip())
    # A bare word followed by ':' that is not a file: a mistyped keyword (drive letters are 1 char).
    if sep and re.fullmatch(r"[A-Za-z]{2,10}", head) and not Path(text).exists():
        raise SourceSpecError(f"unknown source kind {head!r} in {spec!r}; {USAGE}")
    return SourceSpec("file", path=text)


def canonical_spec(spec: str) -> str:
    """One written form per source: a video file as its bare path (``file:/v.mp4`` → ``/v.mp4``).

    Why: the picker wrote ``file:``+path, the command line and the first-run wizard a bare path, so one
    video showed in two forms (settings, saved sessions, the Sessions tab). ``file:`` stays only where
    the bare path would read as another kind of source (a video named "camera"); a spec that does not
    parse is returned as it is, for the caller's own check to report.
    """
    try:
        parsed = parse_spec(spec)
    except SourceSpecError:
        return spec
    if parsed.kind != "file":
        return spec.strip()
    try:
        bare = parse_spec(parsed.path)
    except SourceSpecError:
        return spec.strip()
    return parsed.path if bare == parsed else spec.strip()


def build_source(spec: SourceSpec | str, realtime: bool = False, *, exclude: object = None) -> FrameSource:
    """A source for the spec, not yet opened. ``realtime`` only matters for files (live ones always are)."""
    # Imported per kind, so that parsing never loads OpenCV or mss and a file never needs a screen grabber.
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "file":
        from app.capture.video import VideoFileSource

        return VideoFileSource(s.path, realtime=realtime)
    if s.kind == "camera":
        from app.capture.camera import CameraSource

        return CameraSource(s.device)
    from app.capture.screen import ScreenSource

    if s.kind == "screen":
        return ScreenSource(s.monitor, exclude=exclude)  # type: ignore[arg-type]
    if s.kind == "region":
        return ScreenSource(region=s.region, exclude=exclude)  # type: ignore[arg-type]
    return ScreenSource(window=s.title, exclude=exclude)  # type: ignore[arg-type]


def open_source(spec: str, realtime: bool = False, *, exclude: object = None) -> FrameSource:
    """Parse, build and open: every error (bad spec, missing file, no camera, no display) is a CaptureError.

    ``exclude`` is passed to screen sources (see ``app.capture.screen.exclusion``). ``open()`` is
    idempotent, so ``with open_source(...) as src:`` works too.
    """
    source = build_source(spec, realtime, exclude=exclude)
    source.open()
    return source
