"""Issue 28, items 1 and 8: the window's controls are generated from the one declaration of each setting.

Every number control of the Watch tab and of the Settings dialog is bound to one settings field and has
exactly that field's declared range and default (SessionConfig, BackendSettings, APP_LIMITS); a control that
is not bound, or a range typed in by hand, fails here. The Engine tab's context window and threads reach the
engine the session starts (the real tiny model in its own process), and the status bar reads them from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QAbstractSpinBox, QDoubleSpinBox, QSlider, QSpinBox, QWidget

from app.core.config import APP_LIMITS, BackendSettings, Limit, SessionConfig, default, limit
from app.core.settings import OverlaySettings, SettingsStore, SpeechSettings
from app.ui.settings_model import SettingsModel
from app.ui.worker import default_backend

from .conftest import configure

# (section, key) of settings.toml → the declaration it must follow: its range and its default.
DECLARED: dict[tuple[str, str], tuple[Limit, object]] = {
    **{("session", name): (limit(SessionConfig, name), default(SessionConfig, name))
       for name in ("interval", "frames_per_turn", "talkativeness")},
    **{("session", name): (limit(BackendSettings, name), default(BackendSettings, name))
       for name in ("n_ctx", "n_threads")},
    ("speech", "rate"): (APP_LIMITS["speech", "rate"], SpeechSettings().rate),
    **{("overlay", name): (APP_LIMITS["overlay", name], getattr(OverlaySettings(), name))
       for name in ("opacity", "fade_seconds", "font_size")},
}


def _number_controls(root: QWidget) -> list[QWidget]:
    return [c for c in root.findChildren(QAbstractSpinBox) + root.findChildren(QSlider)
            if isinstance(c, (QSpinBox, QDoubleSpinBox, QSlider))]


def _check(model: SettingsModel, root: QWidget) -> set[tuple[str, str]]:
    """Each number control under ``root`` is bound, with its field's range and default; returns the fields."""
    bound = {id(b.widget): b for b in model.bindings}
    seen = set()
    for control in _number_controls(root):
        b = bound.get(id(control))
        assert b is not None, f"{control.__class__.__name__} {control.toolTip()!r} is bound to no setting"
        lim, dflt = DECLARED[b.section, b.key]
        assert (control.minimum(), control.maximum()) == (lim.low, lim.high), (b.section, b.key)
        assert control.value() == dflt, (b.section, b.key, control.value())
        assert control.toolTip() == lim.help
        seen.add((b.section, b.key))
    return seen


def test_every_number_control_has_its_settings_range_and_default(qtbot, make_window) -> None:
    w = make_window()  # no settings file: every setting at its default
    on_watch = _check(w.model, w.watch)
    assert on_watch == {("session", "interval"), ("session", "frames_per_turn"), ("session", "talkativeness")}
    dialog = w.settings_sync.open_settings()
    in_dialog = _check(dialog.model, dialog)
    assert on_watch | in_dialog == set(DECLARED), "every declared setting the GUI sets has its control"
    gpu = APP_LIMITS["session", "gpu"]
    assert all(gpu.low <= dialog.gpu.itemData(i) <= gpu.high for i in range(dialog.gpu.count()))
    dialog.reject()


def test_a_range_typed_in_by_hand_is_caught(qtbot, make_window) -> None:
    w = make_window()
    w.watch.interval_spin.setRange(0.2, 10.0)  # what the Watch tab once had: the check must see it
    with pytest.raises(AssertionError):
        _check(w.model, w.watch)


def test_context_and_threads_reach_the_engine_and_the_status_bar_reads_them_from_it(
        qtbot, make_window, vtest_avi: Path, tmp_path: Path) -> None:
    started_with: list[BackendSettings] = []

    def engine(request):  # type: ignore[no-untyped-def]
        started_with.append(request.backend)
        return default_backend(request)  # the real engine, in its own process

    w = make_window(source=str(vtest_avi), backend_factory=engine)
    configure(w, interval=0.5, frames=1, talk=-50)
    dialog = w.settings_sync.open_settings()
    dialog.n_ctx.setValue(4096)
    dialog.n_threads.setValue(1)
    dialog.accept()
    saved = SettingsStore(tmp_path / "config").load().session
    assert (saved.n_ctx, saved.n_threads) == (4096, 1), "saved in settings.toml's [session]"

    w.start()
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    assert (started_with[-1].n_ctx, started_with[-1].n_threads) == (4096, 1)
    assert w.controller.backend.settings.n_ctx == 4096, "the engine's process runs with the chosen window"
    dialog = w.settings_sync.open_settings()
    dialog.n_ctx.setValue(2048)  # the next Start's, not the running session's
    dialog.accept()
    before = w.last_result
    qtbot.waitUntil(lambda: w.last_result is not before, timeout=60_000)  # a step after the change
    assert w.status.context_label.text().split("/")[1].startswith("4096 "), w.status.context_label.text()
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)
