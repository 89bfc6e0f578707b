"""Just enough libX11 (through ctypes) to put known pictures on a test X server."""

from __future__ import annotations

import ctypes

from app.capture.x11windows import load_xlib


class XDraw:
    """Just enough Xlib to paint the root window and make titled, coloured windows."""

    def __init__(self, display: str) -> None:
        lib = load_xlib()
        assert lib is not None, "libX11 must exist where Xvfb runs"
        self.lib = lib
        lib.XCreateSimpleWindow.restype = ctypes.c_ulong
        lib.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong,
                                            ctypes.c_ulong]
        for name in ("XMapWindow", "XUnmapWindow", "XClearWindow", "XDestroyWindow"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        lib.XSetWindowBackground.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        lib.XStoreName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_char_p]
        lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.dpy = lib.XOpenDisplay(display.encode())
        assert self.dpy, f"cannot open {display}"
        self.root = lib.XDefaultRootWindow(self.dpy)

    def sync(self) -> None:
        self.lib.XSync(self.dpy, 0)

    def paint_root(self, rgb: int) -> None:
        self.lib.XSetWindowBackground(self.dpy, self.root, rgb)
        self.lib.XClearWindow(self.dpy, self.root)
        self.sync()

    def window(self, title: str, x: int, y: int, w: int, h: int, rgb: int) -> int:
        win = self.lib.XCreateSimpleWindow(self.dpy, self.root, x, y, w, h, 0, 0, rgb)
        self.lib.XStoreName(self.dpy, win, title.encode())
        self.lib.XMapWindow(self.dpy, win)
        self.sync()
        return win

    def map(self, win: int) -> None:
        self.lib.XMapWindow(self.dpy, win)
        self.sync()

    def unmap(self, win: int) -> None:
        self.lib.XUnmapWindow(self.dpy, win)
        self.sync()

    def close(self) -> None:
        self.lib.XCloseDisplay(self.dpy)  # destroys this client's windows


def rgb_of(value: int) -> list[int]:
    return [(value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF]
