"""Finding a top-level window's on-screen rectangle by title on X11, through libX11 via ctypes.

ctypes rather than xdotool/wmctrl/python-xlib: libX11 is present wherever an X server or mss can
run, so window capture needs nothing extra installed. Limitations: X11 (and XWayland windows) only;
the rectangle is grabbed from the screen, so whatever overlaps the window is captured too, and a
minimised window is not found. Windows and macOS are not supported yet (use a region instead).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

Window = ctypes.c_ulong
Atom = ctypes.c_ulong
IS_VIEWABLE = 2


class XWindowAttributes(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
        ("border_width", ctypes.c_int), ("depth", ctypes.c_int), ("visual", ctypes.c_void_p),
        ("root", Window), ("class_", ctypes.c_int), ("bit_gravity", ctypes.c_int),
        ("win_gravity", ctypes.c_int), ("backing_store", ctypes.c_int), ("backing_planes", ctypes.c_ulong),
        ("backing_pixel", ctypes.c_ulong), ("save_under", ctypes.c_int), ("colormap", ctypes.c_ulong),
        ("map_installed", ctypes.c_int), ("map_state", ctypes.c_int), ("all_event_masks", ctypes.c_long),
        ("your_event_mask", ctypes.c_long), ("do_not_propagate_mask", ctypes.c_long),
        ("override_redirect", ctypes.c_int), ("screen", ctypes.c_void_p),
    ]


ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


@ERROR_HANDLER
def _ignore_x_errors(_display: int, _event: int) -> int:
    # A window can vanish between XQueryTree and the next call; Xlib's default handler would exit().
    return 0


@dataclass(frozen=True)
class WindowInfo:
    id: int
    title: str
    left: int
    top: int
    width: int
    height: int


def load_xlib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("X11")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    lib.XDefaultRootWindow.restype = Window
    lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    lib.XQueryTree.argtypes = [ctypes.c_void_p, Window, ctypes.POINTER(Window), ctypes.POINTER(Window),
                               ctypes.POINTER(ctypes.POINTER(Window)), ctypes.POINTER(ctypes.c_uint)]
    lib.XFree.argtypes = [ctypes.c_void_p]
    lib.XGetWindowAttributes.argtypes = [ctypes.c_void_p, Window, ctypes.POINTER(XWindowAttributes)]
    lib.XFetchName.argtypes = [ctypes.c_void_p, Window, ctypes.POINTER(ctypes.c_char_p)]
    lib.XInternAtom.restype = Atom
    lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.XGetWindowProperty.argtypes = [
        ctypes.c_void_p, Window, Atom, ctypes.c_long, ctypes.c_long, ctypes.c_int, Atom,
        ctypes.POINTER(Atom), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_ulong),
        ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_void_p)]
    lib.XTranslateCoordinates.argtypes = [
        ctypes.c_void_p, Window, Window, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int), ctypes.POINTER(Window)]
    lib.XSetErrorHandler.restype = ctypes.c_void_p
    lib.XSetErrorHandler.argtypes = [ctypes.c_void_p]
    return lib


def _title(lib: ctypes.CDLL, dpy: int, win: int, net_wm_name: int, utf8: int) -> str:
    actual_type, actual_format = Atom(), ctypes.c_int()
    nitems, after, prop = ctypes.c_ulong(), ctypes.c_ulong(), ctypes.c_void_p()
    if lib.XGetWindowProperty(dpy, win, net_wm_name, 0, 4096, 0, utf8, ctypes.byref(actual_type),
                              ctypes.byref(actual_format), ctypes.byref(nitems), ctypes.byref(after),
                              ctypes.byref(prop)) == 0 and prop.value:
        try:
            if nitems.value and actual_format.value == 8:
                return ctypes.string_at(prop.value, nitems.value).decode("utf-8", "replace")
        finally:
            lib.XFree(prop)
    name = ctypes.c_char_p()
    if lib.XFetchName(dpy, win, ctypes.byref(name)) and name.value is not None:
        text = name.value.decode("latin-1", "replace")
        lib.XFree(ctypes.cast(name, ctypes.c_void_p))
        return text
    return ""


def list_windows(display: str | None = None) -> list[WindowInfo]:
    """Viewable, titled windows in stacking order (bottom first), with root-relative rectangles."""
    lib = load_xlib()
    if lib is None:
        raise OSError("libX11 not found")
    dpy = lib.XOpenDisplay(display.encode() if display else None)
    if not dpy:
        raise OSError(f"cannot open X display {display or '(from $DISPLAY)'}")
    previous = lib.XSetErrorHandler(ctypes.cast(_ignore_x_errors, ctypes.c_void_p))
    try:
        root = lib.XDefaultRootWindow(dpy)
        net_wm_name = lib.XInternAtom(dpy, b"_NET_WM_NAME", 0)
        utf8 = lib.XInternAtom(dpy, b"UTF8_STRING", 0)
        found: list[WindowInfo] = []

        def walk(win: int, depth: int) -> None:
            root_ret, parent_ret = Window(), Window()
            children, n = ctypes.POINTER(Window)(), ctypes.c_uint()
            if not lib.XQueryTree(dpy, win, ctypes.byref(root_ret), ctypes.byref(parent_ret),
                                  ctypes.byref(children), ctypes.byref(n)):
                return
            kids = [children[i] for i in range(n.value)]
            if children:
                lib.XFree(children)
            for kid in kids:
                attrs = XWindowAttributes()
                if not lib.XGetWindowAttributes(dpy, kid, ctypes.byref(attrs)) or attrs.map_state != IS_VIEWABLE:
                    continue
                title = _title(lib, dpy, kid, net_wm_name, utf8)
                if title:
                    x, y, child = ctypes.c_int(), ctypes.c_int(), Window()
                    lib.XTranslateCoordinates(dpy, kid, root, 0, 0, ctypes.byref(x), ctypes.byref(y),
                                              ctypes.byref(child))
                    found.append(WindowInfo(int(kid), title, x.value, y.value, attrs.width, attrs.height))
                elif depth < 3:  # window managers reparent clients into untitled frames
                    walk(kid, depth + 1)

        walk(root, 0)
        return found
    finally:
        lib.XSetErrorHandler(previous)
        lib.XCloseDisplay(dpy)


def find_window(title: str, display: str | None = None) -> WindowInfo | None:
    """Exact title first (case-insensitive), then substring; among several, the top-most."""
    wins = list_windows(display)
    needle = title.casefold()
    for pool in ([w for w in wins if w.title.casefold() == needle],
                 [w for w in wins if needle in w.title.casefold()]):
        if pool:
            return pool[-1]
    return None
