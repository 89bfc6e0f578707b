"""The screen as a live frame source: a whole monitor, a fixed region, or one window followed by title.

Grabs go through mss (X11, Windows, macOS; not native Wayland, where only XWayland windows are
visible). Keeping Duet's own overlay out of the picture is the UI's business, so this module takes
an ``exclude`` hook and calls it around every grab instead of importing Qt.

Window capture (``window=``) finds the window through libX11 (see ``x11windows``) and grabs its
on-screen rectangle, so it works on X11 only, includes anything overlapping the window, and
pauses (status says so, ticks count as dropped) while the window is hidden or closed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import mss
import numpy as np

from app.capture.base import CaptureError, FrameSource, SourceHealth
from app.capture.color import to_rgb
from app.capture.pacing import TickClock
from app.capture.x11windows import WindowInfo, find_window, list_windows
from app.core.types import Frame


@runtime_checkable
class HideRestore(Protocol):
    """An overlay that can step out of the picture for the length of one grab."""

    def hide(self) -> None: ...
    def restore(self) -> None: ...


ExcludeHook = HideRestore | Callable[[], AbstractContextManager[object]]


@contextlib.contextmanager
def _hidden(overlay: HideRestore) -> Iterator[None]:
    overlay.hide()
    try:
        yield
    finally:
        overlay.restore()


def exclusion(hook: ExcludeHook | None) -> AbstractContextManager[object]:
    """The context to grab inside: hide()/restore() object, context-manager factory, or nothing."""
    if hook is None:
        return contextlib.nullcontext()
    if isinstance(hook, HideRestore):
        return _hidden(hook)
    if callable(hook):
        return hook()
    raise TypeError(f"exclude must have hide()/restore() or be a context-manager factory, got {hook!r}")


@dataclass(frozen=True)
class MonitorInfo:
    index: int  # as in screen:N; 0 is every monitor together
    left: int
    top: int
    width: int
    height: int
    primary: bool = False
    name: str = ""

    def __str__(self) -> str:
        tag = " (primary)" if self.primary else ""
        label = f" {self.name}" if self.name else ""
        return f"screen:{self.index}{label} {self.width}×{self.height} at {self.left},{self.top}{tag}"


def _check_display(display: str | None) -> None:
    if not sys.platform.startswith("linux") or display or os.environ.get("DISPLAY"):
        return
    if os.environ.get("WAYLAND_DISPLAY"):
        raise CaptureError("Screen capture needs X11, but this is a Wayland session without XWayland "
                           "($DISPLAY is unset). Log in to an X11 session or enable XWayland.")
    raise CaptureError("No display to capture: $DISPLAY is not set (headless session?). "
                       "Screen capture needs a running X server; use a video file or camera instead.")


def _new_mss(display: str | None) -> mss.base.MSSBase:
    _check_display(display)
    factory = getattr(mss, "MSS", None) or mss.mss  # mss ≥10.2 deprecates the mss.mss() factory
    kwargs = {"display": display} if display and sys.platform.startswith("linux") else {}
    try:
        return factory(**kwargs)
    except Exception as e:  # mss raises ScreenShotError/XError subclasses, or OSError for libraries
        where = display or os.environ.get("DISPLAY", "")
        raise CaptureError(f"Cannot connect to display {where!r} for screen capture: {e}") from e


def list_monitors(display: str | None = None) -> list[MonitorInfo]:
    """Monitors as ``screen:N`` numbers them (1…n), preceded by 0 = the whole virtual desktop."""
    with _new_mss(display) as sct:
        mons = sct.monitors
    return [MonitorInfo(i, m["left"], m["top"], m["width"], m["height"], bool(m.get("is_primary")),
                        str(m.get("name") or m.get("output") or "")) for i, m in enumerate(mons)]


def _clip(rect: dict[str, int], bounds: dict[str, int]) -> dict[str, int] | None:
    left, top = max(rect["left"], bounds["left"]), max(rect["top"], bounds["top"])
    right = min(rect["left"] + rect["width"], bounds["left"] + bounds["width"])
    bottom = min(rect["top"] + rect["height"], bounds["top"] + bounds["height"])
    if right <= left or bottom <= top:
        return None
    return {"left": left, "top": top, "width": right - left, "height": bottom - top}


class ScreenSource(FrameSource):
    """Grabs a monitor, a region (x, y, w, h in virtual-desktop pixels) or a titled window every tick.

    Exactly one of ``monitor``, ``region``, ``window`` selects the target; none means the primary
    monitor. ``exclude`` is called around each grab (see :func:`exclusion`) on the sampling thread.
    """

    live = True

    def __init__(self, monitor: int | None = None, *, region: tuple[int, int, int, int] | None = None,
                 window: str | None = None, exclude: ExcludeHook | None = None,
                 display: str | None = None) -> None:
        if sum(x is not None for x in (monitor, region, window)) > 1:
            raise ValueError("give only one of monitor, region, window")
        if region is not None and (len(region) != 4 or region[2] <= 0 or region[3] <= 0):
            raise ValueError(f"region must be (x, y, w, h) with w, h > 0, got {region}")
        if window is not None and not window.strip():
            raise ValueError("window title must not be empty")
        self.monitor, self.region, self.window = monitor, region, window
        self.exclude = exclude
        self.display = display
        if window is not None:
            self.name = f"window:{window}"
        elif region is not None:
            self.name = "region:" + ",".join(map(str, region))
        else:
            self.name = "screen" if monitor is None else f"screen:{monitor}"
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one grab at a time, and close() waits for it
        self._sct: mss.base.MSSBase | None = None
        self._sct_thread: int | None = None
        self._bounds: dict[str, int] = {}
        self._target: dict[str, int] | None = None
        self._window: WindowInfo | None = None
        self._status = "not opened"
        self._opened = False

    # ---- target resolution -------------------------------------------------------------------
    def _mss(self) -> mss.base.MSSBase:
        """One mss per grabbing thread: before 10.2 an instance was tied to the thread that made it."""
        me = threading.get_ident()
        if self._sct is None or self._sct_thread != me:
            if self._sct is not None:
                self._sct.close()
            self._sct, self._sct_thread = _new_mss(self.display), me
        return self._sct

    def _resolve_static(self, sct: mss.base.MSSBase) -> dict[str, int]:
        mons = sct.monitors
        self._bounds = dict(mons[0])
        if self.region is not None:
            x, y, w, h = self.region
            rect = _clip({"left": x, "top": y, "width": w, "height": h}, self._bounds)
            if rect is None:
                b = self._bounds
                raise CaptureError(f"Region {self.region} lies outside the screen "
                                   f"({b['width']}×{b['height']} at {b['left']},{b['top']})")
            return rect
        if self.monitor is None:
            prim = next((i for i, m in enumerate(mons[1:], 1) if m.get("is_primary")), 1)
            return dict(mons[prim] if len(mons) > 1 else mons[0])
        if not 0 <= self.monitor < len(mons):
            listing = ", ".join(f"screen:{i} {m['width']}×{m['height']}" for i, m in enumerate(mons))
            raise CaptureError(f"No monitor {self.monitor}: available are {listing}")
        return {k: int(mons[self.monitor][k]) for k in ("left", "top", "width", "height")}

    def _locate_window(self) -> dict[str, int] | None:
        assert self.window is not None
        try:
            wins = list_windows(self.display)
        except OSError as e:
            raise CaptureError(f"Cannot look up windows: {e}") from e
        same = [w for w in wins if self._window is not None and w.id == self._window.id]
        win = same[-1] if same else find_window(self.window, self.display)
        self._window = win
        if win is None:
            return None
        return _clip({"left": win.left, "top": win.top, "width": win.width, "height": win.height}, self._bounds)

    # ---- FrameSource -------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        if self._stop.is_set():
            raise CaptureError(f"{self.name}: source is closed")
        if self.window is not None and not sys.platform.startswith("linux"):
            raise CaptureError("Capturing a window by title works on Linux/X11 only for now; "
                               "capture its area with region:X,Y,W,H instead.")
        with self._lock:
            sct = self._mss()
            if self.window is None:
                self._target = self._resolve_static(sct)
            else:
                self._bounds = dict(sct.monitors[0])
                if self._locate_window() is None:
                    titles = sorted({w.title for w in list_windows(self.display)})[:10]
                    hint = f"; visible windows: {', '.join(map(repr, titles))}" if titles else ""
                    raise CaptureError(f"No visible window titled {self.window!r}{hint}")
            # One test grab so a broken display fails here, where the user is looking.
            self._grab_locked()
        self._status = "live"
        self._opened = True

    def _grab_locked(self) -> np.ndarray | None:
        rect = self._target if self.window is None else self._locate_window()
        if rect is None:
            return None
        sct = self._mss()
        with exclusion(self.exclude):
            shot = sct.grab(rect)
        return to_rgb(np.asarray(shot))  # mss hands back BGRA

    def grab(self) -> np.ndarray | None:
        """One picture now (None while a followed window is not visible)."""
        with self._lock:
            if self._stop.is_set():
                return None
            try:
                return self._grab_locked()
            except CaptureError:
                raise
            except Exception as e:  # the X server went away, a monitor was unplugged…
                raise CaptureError(f"Screen capture failed on {self.name}: {e}") from e

    @property
    def health(self) -> SourceHealth:
        return SourceHealth.HIDDEN if getattr(self, "_window_hidden", False) else super().health

    def sample(self, interval: float) -> Iterator[Frame]:
        if not self._opened:
            raise CaptureError(f"{self.name}: call open() before sample()")
        clock = TickClock(interval, self._stop)
        missed = 0  # ticks spent waiting for a hidden window count as dropped
        while (tick := clock.next()) is not None:
            image = self.grab()
            if image is None:
                if self._stop.is_set():
                    return
                self._status = f"window {self.window!r} not visible, waiting…"
                self._window_hidden = True
                missed += 1 + tick.dropped
                continue
            self._status = "live"
            self._window_hidden = False
            yield Frame(image=image, time=tick.time, index=tick.index, source=self.name,
                        dropped=tick.dropped + missed)
            missed = 0

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._sct is not None:
                # mss on older versions must be closed on its own thread; closing elsewhere is
                # harmless in ≥10.2 and the X connection dies with the process otherwise.
                with contextlib.suppress(Exception):
                    self._sct.close()
                self._sct = None
        self._status = "closed"
