"""The window's keyboard shortcuts, following ``[shortcuts]`` in the settings as it changes.

The keys work from any of Duet's windows (the overlay included): application-wide shortcuts on the main
window. Quit has the platform's keys (Ctrl+Q; ⌘Q on macOS; Ctrl+Q on Windows, which has none), unless a
user shortcut took the same keys.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QWidget

from app.ui.settings_model import SettingsModel


class ShortcutKeys:
    """Installs one QShortcut per ``[shortcuts]`` key on ``window``, and again whenever one changes.

    ``actions`` maps a shortcut's setting name (pause, ask, mute, overlay, talk) to what it does; ``quit``
    is what the platform's Quit keys do.
    """

    def __init__(self, window: QWidget, model: SettingsModel, actions: dict[str, Callable[[], object]],
                 quit: Callable[[], object]) -> None:  # noqa: A002 - the action's name
        self.window, self.model, self.actions, self.quit = window, model, actions, quit
        self.installed: list[QShortcut] = []
        self.install()
        model.observe("shortcuts", lambda _key, _value: self.install(), now=False)

    def install(self) -> None:
        for sc in self.installed:
            sc.setEnabled(False)
            sc.deleteLater()
        keys = self.model.settings.shortcuts
        pairs = [(getattr(keys, name), action) for name, action in self.actions.items()]
        self.installed = [self._add(QKeySequence(seq), action) for seq, action in pairs]
        mine = {QKeySequence(seq).toString() for seq, _action in pairs}
        for seq in QKeySequence.keyBindings(QKeySequence.StandardKey.Quit) or [QKeySequence("Ctrl+Q")]:
            if seq.toString() not in mine:  # a user shortcut on the same keys wins
                self.installed.append(self._add(seq, self.quit))

    def _add(self, seq: QKeySequence, action: Callable[[], object]) -> QShortcut:
        sc = QShortcut(seq, self.window)
        sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
        sc.activated.connect(action)
        return sc
