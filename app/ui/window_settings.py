"""The main window's settings: shown in its controls, changed by them and by the Settings dialog, saved.

Why a mixin of :class:`~app.ui.main_window.MainWindow` rather than an object of its own: every
method here reads or writes both the :class:`~app.core.settings.Settings` and the window's widgets
(the Watch panel, the overlay, the shortcuts), so the window is the one place that holds both; this
module only keeps that half of the window apart from the session wiring.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import QMessageBox

from app.capture.parse import canonical_spec
from app.core.errors import describe_write_failure
from app.core.settings import Settings, SettingsStore
from app.modelhub import hardware
from app.modelhub.library import ModelLibrary
from app.ui.model_choice import fill_combo
from app.ui.model_page import ModelPage
from app.ui.overlay import Overlay
from app.ui.settings_dialog import SettingsDialog
from app.ui.source_picker import describe, pick_source
from app.ui.speech_bridge import SpeechBridge, VoiceInput
from app.ui.watch_panel import WatchPanel


class WindowSettingsMixin:
    """Settings ↔ controls for :class:`~app.ui.main_window.MainWindow` (which provides the attributes below)."""

    settings: Settings
    library: ModelLibrary
    store: SettingsStore
    watch: WatchPanel
    model_page: ModelPage
    overlay: Overlay
    speech: SpeechBridge
    voice: VoiceInput
    # and the Watch panel's widgets the window exposes: model_combo, source_label, mute_button,
    # overlay_button, question; its own show_problem, toggle_pause, focus_question, push_to_talk, quit_app

    def _refresh_models(self) -> None:
        # Never the random test model unless asked for (app/ui/model_choice.py says why).
        fill_combo(self.model_combo, self.library, self.settings.session.model,
                   explicit=getattr(self, "_explicit_model", ""))

    def _apply_settings_to_controls(self) -> None:
        s = self.settings
        s.session.source = canonical_spec(s.session.source)  # an older settings file may hold file:+path
        self.source_label.setText(describe(s.session.source))
        self.source_label.setToolTip(s.session.source)
        self._refresh_models()
        self.watch.show_session_settings(s.session)
        self.mute_button.setChecked(s.speech.muted)
        self._label_mute(s.speech.muted)
        self.overlay_button.setChecked(s.overlay.visible)
        o = s.overlay
        if o.x >= 0 and o.y >= 0:
            self.overlay.move(o.x, o.y)
        else:
            screen = QGuiApplication.primaryScreen()
            if screen is not None:
                g = screen.availableGeometry()
                self.overlay.move(g.right() - o.width - 24, g.bottom() - o.height - 48)
        self.overlay.resize(o.width, o.height)
        self.overlay.fade_seconds = o.fade_seconds
        self.overlay.font_size = o.font_size
        self.overlay.panel_opacity = o.opacity
        self.overlay.set_click_through(o.click_through)

    def _install_shortcuts(self) -> None:
        for sc in getattr(self, "_shortcuts", []):
            sc.setEnabled(False)
            sc.deleteLater()
        k = self.settings.shortcuts
        pairs = ((k.pause, self.toggle_pause), (k.ask, self.focus_question), (k.mute, self.toggle_mute),
                 (k.overlay, self.toggle_overlay), (k.talk, self.push_to_talk))
        self._shortcuts = []
        for seq, slot in pairs:
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(slot)
            self._shortcuts.append(sc)
        # Quit with the platform's keys (Ctrl+Q; ⌘Q on macOS) from any of Duet's windows, the overlay included.
        # Windows has no standard Quit keys: Ctrl+Q there too. A user shortcut on the same keys wins.
        mine = {QKeySequence(seq).toString() for seq, _slot in pairs}
        for seq in QKeySequence.keyBindings(QKeySequence.StandardKey.Quit) or [QKeySequence("Ctrl+Q")]:
            if seq.toString() in mine:
                continue
            sc = QShortcut(seq, self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(self.quit_app)
            self._shortcuts.append(sc)
        self.question.setPlaceholderText(f"Ask about what Duet sees…  ({k.ask}, or {k.talk} to speak)")

    def _collect_settings(self) -> None:
        self.watch.read_session_settings(self.settings.session)

    def save_settings(self) -> bool:
        """Save; False (and the banner says why) when the file could not be written."""
        self._collect_settings()
        w = self.settings.window
        w.x, w.y, w.width, w.height = self.x(), self.y(), self.width(), self.height()
        o = self.settings.overlay
        g = self.overlay.resting_geometry()
        o.x, o.y, o.width, o.height = g.x(), g.y(), g.width(), g.height()
        try:
            self.store.save(self.settings)
        except OSError as e:
            self.show_problem(describe_write_failure(e, "Settings could not be saved",
                                                     "the settings saved before are kept"))
            return False
        return True

    def confirm_close_unsaved(self, problem: str) -> bool:
        """Asked when the settings cannot be saved as the window closes: a banner in a closing window
        would never be read. True: close anyway (the settings saved before are kept)."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Settings not saved", problem,
                          QMessageBox.StandardButton.Close | QMessageBox.StandardButton.Cancel, self)
        box.setInformativeText("Close Duet anyway (the settings saved before are kept), or cancel, do what the "
                               "message says, and close again.")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box.exec() == QMessageBox.StandardButton.Close

    @Slot(bool)
    def set_muted(self, muted: bool) -> None:
        self.settings.speech.muted = muted
        self.speech.set_muted(muted)
        self._label_mute(muted)
        if self.mute_button.isChecked() != muted:
            self.mute_button.setChecked(muted)

    def _label_mute(self, muted: bool) -> None:
        blocked = getattr(self.speech, "blocked", None) if not muted else None
        self.mute_button.setText("Voice off" if muted else ("Voice on ⚠ no sound" if blocked else "Voice on"))
        self.mute_button.setToolTip(blocked or "")

    @Slot()
    def toggle_mute(self) -> None:
        self.set_muted(not self.settings.speech.muted)

    @Slot(bool)
    def set_overlay_visible(self, visible: bool) -> None:
        self.settings.overlay.visible = visible
        self.overlay.set_user_visible(visible)  # hidden overlay + capture on: a small "Watching" pill stays
        if self.overlay_button.isChecked() != visible:
            self.overlay_button.setChecked(visible)

    @Slot()
    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self.settings.overlay.visible)

    @Slot()
    def choose_source(self) -> None:
        spec = pick_source(self.settings.session.source, self)
        if spec:
            self.set_source(spec)

    def set_model(self, spec: str) -> None:
        """Select a model by reference (library name, "tiny", "demo" or a GGUF path)."""
        self.settings.session.model = self._explicit_model = spec
        self.model_combo.setCurrentIndex(-1)
        self._refresh_models()

    def fit_pace(self, name: str) -> bool:
        """Slow the pace to the recommendation's when the user picks a model the size of MMDuet2 on a machine that
        needs it (on 2 CPU cores a frame every 3–3.5 s, not 1 s); True if it did. The pace stays the user's to change:
        this runs when a model is chosen, never at start."""
        entry = self.library.get(name) if name else None
        if entry is None:
            return False
        try:
            size = entry.model.stat().st_size
        except OSError:
            return False
        rec = self.model_page.rec
        interval = hardware.pace_for(size, rec)
        if interval is None or self.interval_spin.value() >= interval:
            return False
        self.interval_spin.setValue(interval)
        self._collect_settings()
        self.chat.add_notice(
            f"Pace set to a frame every {interval:g} s: what {name} on {rec.device} keeps up with "
            f"(Models › This machine). A shorter “Every” makes Duet skip frames and look at each in less detail.")
        return True

    def set_source(self, spec: str) -> None:
        """Watch ``spec`` from the next Start; a video file is kept in one form (a path, not ``file:``+path),
        so the settings, the saved session and the Sessions tab show the same thing however it was chosen."""
        spec = canonical_spec(spec)
        self.settings.session.source = spec
        self.source_label.setText(describe(spec))
        self.source_label.setToolTip(spec)

    def open_settings(self) -> SettingsDialog:
        note = "" if self.speech.speaker.available is not False else (self.speech.speaker.error or "")
        dlg = SettingsDialog(self.settings, voices=self.speech.speaker.voices, speech_note=note,
                             voice_input=self.voice, parent=self)
        dlg.accepted.connect(lambda: self.apply_settings(dlg.result_settings()))
        dlg.open()
        return dlg

    def apply_settings(self, settings: Settings) -> None:
        self._collect_settings()
        settings.session = self.settings.session
        self.settings = settings
        self.speech.apply(settings.speech)
        self.voice.settings = settings.speech
        self._apply_settings_to_controls()
        self.set_overlay_visible(settings.overlay.visible)
        self._install_shortcuts()
        self.save_settings()
