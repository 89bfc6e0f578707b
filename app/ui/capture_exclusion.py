"""Keeping Duet's own windows (the overlay and its pill) out of the screen frames the model sees.

On Windows a window asks the compositor to leave it out of captures (``SetWindowDisplayAffinity``,
:func:`exclude_from_capture`); elsewhere :class:`CaptureExclusion` hides the windows for the length
of each grab. The grab runs on the session thread, so hiding is posted to the GUI thread and the
grabber waits (with a timeout, never a deadlock) until it is done.
"""

from __future__ import annotations

import sys
import threading
import time

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QApplication, QWidget

WDA_EXCLUDEFROMCAPTURE = 0x11


def exclude_from_capture(widget: QWidget) -> bool:
    """Ask the OS to leave this window out of screen captures (Windows 10 2004+); True when it did."""
    if sys.platform != "win32":
        return False
    try:
        import ctypes

        return bool(ctypes.windll.user32.SetWindowDisplayAffinity(int(widget.winId()), WDA_EXCLUDEFROMCAPTURE))
    except Exception:
        return False


class CaptureExclusion(QObject):
    """``hide()``/``restore()`` called by the screen source on its thread around every grab.

    The widget work is posted to the GUI thread; the grabbing thread waits for it (≤ ``timeout``)
    and then a short ``settle`` so the X server has unmapped the window before the pixels are read.
    A timeout — e.g. the GUI thread is itself waiting for the session to end — just grabs anyway.
    """

    _hide_requested = Signal()
    _restore_requested = Signal()

    def __init__(self, widgets: list[QWidget], *, timeout: float = 0.5, settle: float = 0.03) -> None:
        super().__init__()
        self.widgets = widgets
        self.timeout = timeout
        self.settle = settle
        self.hidden_count = 0
        self._was_visible: list[QWidget] = []
        self._done = threading.Event()
        self._hide_requested.connect(self._do_hide)
        self._restore_requested.connect(self._do_restore)

    @property
    def needed(self) -> bool:
        return sys.platform != "win32"

    def hide(self) -> None:
        if not self.needed:
            return
        if threading.current_thread() is threading.main_thread():
            self._do_hide()
            return
        self._done.clear()
        self._hide_requested.emit()
        if self._done.wait(self.timeout) and self._was_visible:
            time.sleep(self.settle)

    def restore(self) -> None:
        if not self.needed:
            return
        if threading.current_thread() is threading.main_thread():
            self._do_restore()
            return
        self._restore_requested.emit()  # no need to wait: the picture is already taken

    @Slot()
    def _do_hide(self) -> None:
        every = [c for w in self.widgets for c in (w, *getattr(w, "companions", []))]
        self._was_visible = [w for w in every if w.isVisible()]
        for w in self._was_visible:
            w.hide()
        if self._was_visible:
            self.hidden_count += 1
            QApplication.processEvents()
        self._done.set()

    @Slot()
    def _do_restore(self) -> None:
        for w in self._was_visible:
            w.show()
        self._was_visible = []
