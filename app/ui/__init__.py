"""The PySide6 shell: windows, overlay, tray and the bridges that put the Qt-free core on worker threads.

Nothing below app/ui imports from here; the session, capture, speech and storage all run without Qt.
"""
