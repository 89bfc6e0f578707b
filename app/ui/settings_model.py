"""The user's settings as an evented model (napari's way): one live holder that says what changed.

Why: the window used to copy settings into its controls and back by hand, at chosen moments (start,
save, the dialog's OK), which made it one class that knew every control and every setting. Here the
:class:`~app.core.settings.Settings` object has one owner, :class:`SettingsModel`; a change goes through
:meth:`SettingsModel.set` and is announced as ``changed(section, key, value)``. Controls are bound to a
setting with :meth:`SettingsModel.bind`: the control shows it, writes the user's change back at once and
follows changes made elsewhere; whatever a setting drives (the overlay, the voice, the shortcuts) observes
its section with :meth:`SettingsModel.observe`.

A bound spin box or slider takes its range and tooltip from the setting's one declaration
(:data:`app.core.settings.LIMITS`: the session's fields from :class:`~app.core.config.SessionConfig` and
:class:`~app.core.config.BackendSettings`, the rest from ``APP_LIMITS``), so the window accepts exactly
what settings.toml and the command line accept; ``tests/ui/test_controls_from_settings.py`` holds every
bound control to it. Saving is :class:`~app.core.settings.SettingsStore`'s, so the file is as before.

The model holds the plain dataclasses of :mod:`app.core.settings` (Qt enters only through its signal and
:meth:`~SettingsModel.bind`) and checks a value against the same limits the settings file is read with, so
a wrong value is refused here instead of being saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QAbstractButton, QComboBox, QDoubleSpinBox, QSlider, QSpinBox, QWidget

from app.core.config import Limit
from app.core.settings import LIMITS, Settings, SettingsStore


@dataclasses.dataclass(frozen=True)
class Binding:
    """A control kept equal to one setting; ``limit`` is the declared range it was given (None: not a number)."""

    widget: QWidget
    section: str
    key: str
    limit: Limit | None


class SettingsModel(QObject):
    """Holds the window's :class:`Settings`; ``changed(section, key, value)`` after each real change."""

    changed = Signal(str, str, object)

    def __init__(self, settings: Settings, store: SettingsStore | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self.store = store
        self.bindings: list[Binding] = []  # every control bound to a setting, for the tests that hold them to it

    @property
    def settings(self) -> Settings:
        """The live settings: read freely; change them with :meth:`set` so that observers hear of it."""
        return self._settings

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self._settings, section), key)

    def set(self, section: str, key: str, value: Any) -> bool:
        """Change one setting; True when it changed (then ``changed`` was emitted). A value outside the
        setting's declared range raises :class:`~app.core.errors.SettingError` and changes nothing."""
        target = getattr(self._settings, section)
        if not hasattr(target, key):
            raise KeyError(f"[{section}] has no setting {key!r}")
        if getattr(target, key) == value:
            return False
        limit = LIMITS.get((section, key))
        if limit is not None:
            limit.check(f"[{section}] {key}", value)
        setattr(target, key, value)
        self.changed.emit(section, key, value)
        return True

    def update(self, other: Settings, keys: Callable[[str, str], bool] = lambda _s, _k: True) -> None:
        """Take every value of ``other`` for which ``keys(section, key)`` is true (the Settings dialog's OK)."""
        for section in dataclasses.fields(other):
            values = getattr(other, section.name)
            for f in dataclasses.fields(values):
                if keys(section.name, f.name):
                    self.set(section.name, f.name, getattr(values, f.name))

    def observe(self, section: str, slot: Callable[[str, Any], None], *, now: bool = True) -> None:
        """Call ``slot(key, value)`` on every change in ``section`` and, with ``now``, once per current value."""
        self.changed.connect(lambda s, k, v: slot(k, v) if s == section else None)
        if now:
            for f in dataclasses.fields(getattr(self._settings, section)):
                slot(f.name, self.get(section, f.name))

    def save(self) -> None:
        """Write settings.toml (atomically); an OSError (a full disk) is the caller's to say."""
        if self.store is None:
            raise RuntimeError("this SettingsModel has no store to save to")
        self.store.save(self._settings)

    def bind(self, widget: QWidget, section: str, key: str) -> Binding:
        """Keep ``widget`` equal to ``[section] key`` both ways; a number control gets the declared range.

        A spin box or slider also takes the declared help as its tooltip; a combo box selects by item data;
        a checkable button by its checked state.
        """
        limit = LIMITS.get((section, key))
        current = self.get(section, key)
        kind = type(current)
        if isinstance(widget, (QSpinBox, QDoubleSpinBox, QSlider)):
            if limit is None:
                raise KeyError(f"[{section}] {key} has no declared range for a {type(widget).__name__}")
            if isinstance(widget, QDoubleSpinBox):
                widget.setRange(float(limit.low), float(limit.high))
            else:
                widget.setRange(int(limit.low), int(limit.high))
            widget.setToolTip(limit.help)
        show, changed, read = _accessors(widget)

        def to_widget(value: Any) -> None:
            if read() != _shown(widget, value):
                show(_shown(widget, value))

        def from_widget(*_: Any) -> None:
            value = read()
            if value is None:
                return  # an empty choice ("No model yet") is no value
            if isinstance(widget, QDoubleSpinBox):
                value = round(value, widget.decimals())
            self.set(section, key, kind(value) if kind in (int, float, bool) else value)

        to_widget(current)
        changed.connect(from_widget)
        self.changed.connect(lambda s, k, v: to_widget(v) if (s, k) == (section, key) else None)
        binding = Binding(widget, section, key, limit)
        self.bindings.append(binding)
        return binding


def _shown(widget: QWidget, value: Any) -> Any:
    """The setting's value as the control holds it (a slider holds whole numbers)."""
    return round(value) if isinstance(widget, QSlider) else value


def _accessors(widget: QWidget) -> tuple[Callable[[Any], None], Any, Callable[[], Any]]:
    """(show a value, the signal of a user's change, read the value) for the kinds of control bound."""
    if isinstance(widget, (QSpinBox, QDoubleSpinBox, QSlider)):
        return widget.setValue, widget.valueChanged, widget.value
    if isinstance(widget, QComboBox):
        return (lambda v: widget.setCurrentIndex(widget.findData(v)), widget.currentIndexChanged,
                widget.currentData)
    if isinstance(widget, QAbstractButton) and widget.isCheckable():
        return widget.setChecked, widget.toggled, widget.isChecked
    raise TypeError(f"cannot bind a {type(widget).__name__} to a setting")
