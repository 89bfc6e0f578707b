"""Choosing what Duet watches: monitors and windows with live thumbnails, a drawn region, a camera, a file.

The dialog only produces a source *spec* string (``screen:1``, ``window:Firefox``, ``region:…``,
``camera:0``, a path); the session thread opens it. Thumbnails are small mss grabs refreshed every
1.5 s while the dialog is open — cheap enough for the GUI thread at this size and rate.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.capture.base import CaptureError
from app.capture.parse import SourceSpecError, parse_spec
from app.ui.images import rgb_to_pixmap
from app.ui.region_selector import RegionSelector

THUMB = QSize(220, 124)
REGION_TAB = 2
DRAW_REGION = 2  # dialog result: the user asked to draw a region on screen (QDialog uses 0 and 1)
VIDEO_FILTER = "Videos (*.mp4 *.mkv *.avi *.mov *.webm *.m4v *.mpg *.mpeg *.wmv);;All files (*)"


def describe(spec: str) -> str:
    """A friendly name for a spec, for the main window."""
    try:
        s = parse_spec(spec)
    except SourceSpecError:
        return spec
    if s.kind == "file":
        return f"Video file · {Path(s.path).name}"
    if s.kind == "camera":
        return f"Camera {s.device}"
    if s.kind == "screen":
        return "Whole desktop" if s.monitor == 0 else (f"Screen {s.monitor}" if s.monitor else "Primary screen")
    if s.kind == "region":
        x, y, w, h = s.region or (0, 0, 0, 0)
        return f"Region {w}×{h} at {x},{y}"
    return f"Window · {s.title}"


def own_windows() -> tuple[set[int], set[str]]:
    """X window ids and titles of Duet's own windows (the overlay above all), never offered as sources.

    Why titles too: under a window manager the listed window can be the client or a frame around
    it; the id matches the client, the title matches either.
    """
    ids: set[int] = set()
    titles: set[str] = set()
    for w in QApplication.topLevelWidgets():
        if w.testAttribute(Qt.WidgetAttribute.WA_WState_Created):
            ids.add(int(w.winId()))
        if w.windowTitle():
            titles.add(w.windowTitle())
    return ids, titles


def windows_message(windows: list[object], problem: BaseException | None) -> str:
    """What the Windows tab says above its list: what is really missing when it is empty.

    Window capture lists windows through libX11 itself, so it needs an X11 display (or XWayland) and
    nothing else: no window manager. On such a display an empty list means there is no other window
    (Duet's own are never offered), not that the desktop is wrong."""
    if windows:
        return "Pick a window; Duet follows it by title."
    if not sys.platform.startswith("linux"):
        return "Window capture works on Linux (X11) only for now: pick a Region around the window instead."
    if problem is None:
        return ("No other window is open on this display (Duet's own windows are not offered): open the window "
                "to watch, then choose the source again.")
    if not os.environ.get("DISPLAY"):
        return ("Window capture needs an X11 display, and $DISPLAY is not set (a Wayland session without "
                "XWayland, or no desktop): log in to an X11 session or enable XWayland.")
    detail = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
    return f"Windows cannot be listed on this display: {detail}."


def camera_devices() -> list[str]:
    """Camera nodes the OS shows (Linux); elsewhere indices are probed when the session opens."""
    return sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []


def pick_source(current: str, parent: QWidget | None = None) -> str | None:
    """Run the source picker; returns the chosen spec, or None when the user cancelled.

    "Draw on screen…" closes the picker (so it is not in the way), runs the selection layer, then
    reopens the picker on its Region tab with the drawn rectangle filled in for the user to confirm.
    """
    spec, tab = current, None
    while True:
        picker = SourcePicker(spec, parent, tab=tab)
        code = picker.exec()
        picker.deleteLater()
        if code == QDialog.DialogCode.Accepted.value:
            return picker.spec()
        if code != DRAW_REGION:
            return None
        spec, tab = current, REGION_TAB
        rect = RegionSelector().select()
        if rect is not None:
            spec = "region:" + ",".join(map(str, rect))


class SourcePicker(QDialog):
    """Tabs for each kind of source; ``spec()`` is the choice."""

    def __init__(self, current: str = "screen", parent: QWidget | None = None, *, tab: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose what Duet watches")
        self.resize(760, 520)
        self._sct = None
        self._spec = current
        self.tabs = QTabWidget()
        self.monitors = self._icon_list()
        self.windows = self._icon_list()
        self.screen_message = QLabel()
        self.screen_message.setWordWrap(True)
        self.tabs.addTab(self._wrap(self.monitors, self.screen_message), "Screens")
        self.window_message = QLabel()
        self.window_message.setWordWrap(True)
        self.tabs.addTab(self._wrap(self.windows, self.window_message), "Windows")
        self.tabs.addTab(self._region_tab(), "Region")
        self.tabs.addTab(self._camera_tab(), "Camera")
        self.tabs.addTab(self._file_tab(), "Video file")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.error = QLabel()
        self.error.setObjectName("banner")
        self.error.hide()
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs)
        lay.addWidget(self.error)
        lay.addWidget(buttons)
        self._timer = QTimer(self)
        self._timer.setInterval(1500)
        self._timer.timeout.connect(self.refresh_thumbnails)
        self.populate()
        self._select_current(current)
        if tab is not None:
            self.tabs.setCurrentIndex(tab)

    # ---- building --------------------------------------------------------------------------
    @staticmethod
    def _icon_list() -> QListWidget:
        w = QListWidget()
        w.setViewMode(QListWidget.ViewMode.IconMode)
        w.setIconSize(THUMB)
        w.setResizeMode(QListWidget.ResizeMode.Adjust)
        w.setMovement(QListWidget.Movement.Static)
        w.setSpacing(10)
        w.setWordWrap(True)
        return w

    @staticmethod
    def _wrap(widget: QWidget, message: QLabel) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addWidget(message)
        lay.addWidget(widget, 1)
        return page

    @staticmethod
    def _entry_tab(intro: str, edit: QLineEdit, button: QPushButton) -> QWidget:
        """A tab of one line: what it is for, then a text field with its button beside it."""
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addWidget(QLabel(intro))
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(button)
        lay.addLayout(row)
        lay.addStretch(1)
        return page

    def _region_tab(self) -> QWidget:
        self.region_edit = QLineEdit()
        self.region_edit.setPlaceholderText("e.g. 100,100,1280,720")
        draw = QPushButton("Draw on screen…")
        draw.clicked.connect(self._draw_region)
        return self._entry_tab("Watch a fixed rectangle of the desktop (X, Y, width, height in pixels).",
                               self.region_edit, draw)

    def _camera_tab(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.addWidget(QLabel("Camera index (0 is usually the built-in webcam)."))
        self.camera_index = QSpinBox()
        self.camera_index.setRange(0, 15)
        lay.addWidget(self.camera_index)
        nodes = camera_devices()
        found = ", ".join(nodes) if nodes else "none detected — plug in a webcam, or try an index anyway"
        self.camera_info = QLabel(f"Video devices: {found}")
        self.camera_info.setWordWrap(True)
        lay.addWidget(self.camera_info)
        lay.addStretch(1)
        return page

    def _file_tab(self) -> QWidget:
        self.file_edit = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        return self._entry_tab("Play a video file in Duet; replies are stamped with the video's own time.",
                               self.file_edit, browse)

    # ---- content ---------------------------------------------------------------------------
    def _grabber(self) -> object:
        if self._sct is None:
            import mss

            self._sct = (getattr(mss, "MSS", None) or mss.mss)()  # mss ≥10.2 renamed the factory
        return self._sct

    def _thumb(self, rect: dict[str, int]) -> QIcon:
        try:
            shot = np.asarray(self._grabber().grab(rect))  # type: ignore[attr-defined]
            rgb = shot[..., 2::-1]
            return QIcon(rgb_to_pixmap(rgb, THUMB.width(), THUMB.height()))
        except Exception:
            return QIcon()

    def populate(self) -> None:
        self.monitors.clear()
        self.windows.clear()
        try:
            from app.capture.screen import list_monitors

            mons = list_monitors()
        except (CaptureError, Exception) as e:  # no display, Wayland, mss missing
            self.screen_message.setText(f"Screen capture is not available here: {e}")
            self.window_message.setText(windows_message([], e))
            return
        self.screen_message.setText("Pick a monitor. The overlay is hidden from Duet's own captures.")
        for m in mons:
            label = "All monitors" if m.index == 0 else f"Screen {m.index}{' (primary)' if m.primary else ''}"
            item = QListWidgetItem(f"{label}\n{m.width}×{m.height}")
            item.setData(Qt.ItemDataRole.UserRole, f"screen:{m.index}")
            item.setData(Qt.ItemDataRole.UserRole + 1, {"left": m.left, "top": m.top, "width": m.width,
                                                         "height": m.height})
            self.monitors.addItem(item)
        wins, problem = [], None
        try:
            from app.capture.x11windows import list_windows

            mine_ids, mine_titles = own_windows()
            wins = [w for w in list_windows() if w.title.strip() and w.width > 40 and w.height > 40
                    and w.id not in mine_ids and w.title not in mine_titles]
        except Exception as e:  # noqa: BLE001 - no libX11, a display that went away: said in the tab
            problem = e
        self.window_message.setText(windows_message(wins, problem))
        for w in wins:
            item = QListWidgetItem(w.title[:40])
            item.setToolTip(w.title)
            item.setData(Qt.ItemDataRole.UserRole, f"window:{w.title}")
            item.setData(Qt.ItemDataRole.UserRole + 1, {"left": w.left, "top": w.top, "width": w.width,
                                                         "height": w.height})
            self.windows.addItem(item)
        self.refresh_thumbnails()

    def refresh_thumbnails(self) -> None:
        for lst in (self.monitors, self.windows):
            for i in range(lst.count()):
                item = lst.item(i)
                rect = item.data(Qt.ItemDataRole.UserRole + 1)
                if rect:
                    item.setIcon(self._thumb(rect))

    def showEvent(self, event: object) -> None:  # noqa: N802
        super().showEvent(event)  # type: ignore[arg-type]
        self._timer.start()

    def hideEvent(self, event: object) -> None:  # noqa: N802
        self._timer.stop()
        super().hideEvent(event)  # type: ignore[arg-type]

    def _select_current(self, spec: str) -> None:
        try:
            s = parse_spec(spec)
        except SourceSpecError:
            return
        index = {"screen": 0, "window": 1, "region": 2, "camera": 3, "file": 4}[s.kind]
        self.tabs.setCurrentIndex(index)
        if s.kind == "region" and s.region:
            self.region_edit.setText(",".join(map(str, s.region)))
        elif s.kind == "camera" and isinstance(s.device, int):
            self.camera_index.setValue(s.device)
        elif s.kind == "file":
            self.file_edit.setText(s.path)
        lst = self.monitors if s.kind == "screen" else self.windows if s.kind == "window" else None
        if lst is not None:
            for i in range(lst.count()):
                if lst.item(i).data(Qt.ItemDataRole.UserRole) == spec:
                    lst.setCurrentRow(i)

    def _draw_region(self) -> None:
        """Close with DRAW_REGION: :func:`pick_source` runs the layer and reopens this dialog."""
        self.done(DRAW_REGION)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a video", self.file_edit.text(), VIDEO_FILTER)
        if path:
            self.file_edit.setText(path)

    # ---- result ----------------------------------------------------------------------------
    def current_spec(self) -> str:
        tab = self.tabs.currentIndex()
        if tab in (0, 1):
            lst = self.monitors if tab == 0 else self.windows
            item = lst.currentItem()
            if item is None:
                raise SourceSpecError("pick a screen or a window first")
            return str(item.data(Qt.ItemDataRole.UserRole))
        if tab == 2:
            return f"region:{self.region_edit.text().strip()}"
        if tab == 3:
            return f"camera:{self.camera_index.value()}"
        path = self.file_edit.text().strip()
        if not path:
            raise SourceSpecError("choose a video file first")
        return f"file:{path}"

    def _accept(self) -> None:
        try:
            spec = self.current_spec()
            parse_spec(spec)
        except SourceSpecError as e:
            self.error.setText(str(e))
            self.error.show()
            return
        self._spec = spec
        self.accept()

    def spec(self) -> str:
        return self._spec

    def done(self, result: int) -> None:
        self._timer.stop()
        if self._sct is not None:
            try:
                self._sct.close()  # type: ignore[attr-defined]
            except Exception:
                pass
            self._sct = None
        super().done(result)
