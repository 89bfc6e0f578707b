"""``duet gui``: build the QApplication and the main window.

Kept tiny so the CLI can call it and tests can build :class:`MainWindow` directly with their own
stores and model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="duet gui", description="Duet: a desktop assistant that watches with you.")
    p.add_argument("--source", help="what to watch: FILE, camera[:N], screen[:N], region:X,Y,W,H, window:TITLE")
    p.add_argument("--model", help="library name, 'tiny', 'demo' or a GGUF path")
    p.add_argument("--config-dir", type=Path, help="where settings.toml lives (default: the platform's config dir)")
    p.add_argument("--start", action="store_true", help="start watching at once")
    p.add_argument("--no-tray", action="store_true", help="no tray icon")
    p.add_argument("--no-first-run", action="store_true",
                   help="skip the first-run wizard (it is also skipped with --start)")
    return p


def gui_flags() -> set[str]:
    """The app's own option strings (not ``-h``): ``duet`` hands a command line starting with one to :func:`main`."""
    return {flag for action in _parser()._actions for flag in action.option_strings} - {"-h", "--help"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if sys.platform.startswith("linux") and os.environ.get("WAYLAND_DISPLAY") and os.environ.get("DISPLAY") \
            and "QT_QPA_PLATFORM" not in os.environ:
        # Under Wayland a client cannot stay on top or be captured by mss; XWayland can (docs/desktop.md §1.2).
        os.environ["QT_QPA_PLATFORM"] = "xcb"

    # The GPU choice ([session] gpu) goes with each Start to the engine's own process (BackendSettings.gpu),
    # so changing it takes no restart, and this process still sees every GPU to offer in the settings.
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.core.settings import SettingsStore
    from app.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Duet")
    app.setQuitOnLastWindowClosed(True)
    store = SettingsStore(args.config_dir)
    from app.ui.first_run import FirstRunWizard, should_show

    wizard = None
    if should_show(store) and not (args.start or args.no_first_run):  # once, before the window reads settings
        wizard = FirstRunWizard(store)
        wizard.exec()
    window = MainWindow(store, tray=not args.no_tray)
    if wizard is not None and wizard.save_problem:
        window.show_problem(wizard.save_problem)
    if args.source:
        window.settings_sync.set_source(args.source)
    if args.model:
        window.settings_sync.set_model(args.model)
    window.show()
    if window.settings.overlay.visible:
        window.overlay.set_user_visible(True)
    # The main window was mapped after the overlay: raise the overlay once it is up, or it starts under it.
    QTimer.singleShot(0, window.overlay.bring_to_front)
    if args.start:
        window.start()
    rc = int(app.exec())
    from app.modelhub.jobs import manager

    manager().shutdown()  # running pulls pause; the next start resumes them from their state files
    return rc


if __name__ == "__main__":
    sys.exit(main())
