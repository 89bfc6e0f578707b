"""Run under a real X server (xcb) with no window manager and no other program's window: open the source
picker and print what its Windows tab says (``message <text>``). Used by test_windows_tab_x11.py."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from app.ui.source_picker import SourcePicker


def main() -> int:
    app = QApplication(sys.argv[:1])
    picker = SourcePicker("screen")
    picker.show()
    app.processEvents()
    picker.populate()  # again, with the picker itself mapped: it is Duet's own and must not count
    print("message", picker.window_message.text(), flush=True)
    print("offered", picker.windows.count(), flush=True)
    picker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
