"""The main window's settings at work: its controls bound to the settings model, and what each setting drives.

:class:`~app.ui.settings_model.SettingsModel` holds the settings and says what changed; :class:`SettingsSync`
connects the window's parts to it once, when the window is built, and holds the actions that change settings:

- the Watch tab's controls are bound to their settings (pace, frames per turn, talkativeness, voice on/off,
  overlay on/off): a change the user makes is in the settings at once, and one made elsewhere (the pace a
  model needs, the tray's mute) shows in the control;
- the source label, the overlay, the voice and the shortcuts follow their sections;
- the model drop-down offers what the library has and writes the model it shows;
- the Settings dialog's OK takes what the dialog edits (:func:`app.ui.settings_dialog.edits`).

The session wiring stays in :class:`~app.ui.main_window.MainWindow`, and so does saving (the window knows
where its windows are).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QGuiApplication

from app.capture.parse import canonical_spec
from app.core.settings import Settings, SettingsStore
from app.modelhub import hardware
from app.modelhub.library import ModelLibrary
from app.ui.model_choice import fill_combo, no_model_message
from app.ui.settings_dialog import SettingsDialog, edits
from app.ui.settings_model import SettingsModel
from app.ui.shortcut_keys import ShortcutKeys
from app.ui.source_picker import describe, pick_source

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow


def problems_on_opening(store: SettingsStore, library: ModelLibrary) -> list[str]:
    """What the window says as it opens about the files it read: a settings file or library index set aside,
    settings replaced by their defaults, a library that cannot be where it is looked for."""
    out = []
    if store.recovered_from is not None:
        out.append(f"The settings file was damaged; it was set aside as {store.recovered_from.name} and defaults "
                   "were restored.")
    problems = store.problems  # out of range or of the wrong type: replaced by defaults, said here
    if problems:
        shown = "; ".join(problems[:3]) + ("; …" if len(problems) > 3 else "")
        out.append(f"Some settings in {store.path} were not usable and their defaults are used: {shown}.")
    library.entries()  # reading it sets a damaged index aside, so it is reported here, once
    problem = library.root_problem()
    if problem:  # not an empty library: a library that cannot exist where it is looked for
        out.append(f"{problem[0].upper()}{problem[1:]}.")
    if library.recovered_from is not None:
        out.append(f"The model library index was damaged; it was set aside as {library.recovered_from.name}. "
                   "The model files are untouched: import them again from the Models page.")
    return out


class SettingsSync:
    """Settings ↔ the main window's controls and parts. ``window`` provides the Watch panel, overlay, voice,
    speaker, library, Models page and controller; its ``show_problem`` and ``save_settings`` report and save."""

    def __init__(self, window: MainWindow, model: SettingsModel) -> None:
        self.window, self.model = window, model
        self.explicit_model = ""  # a model named for this run (--model): offered even when it is the test model
        w = window.watch
        model.set("session", "source", canonical_spec(model.settings.session.source))  # an older file: file:+path
        for widget, section, key in ((w.interval_spin, "session", "interval"),
                                     (w.frames_spin, "session", "frames_per_turn"),
                                     (w.talk_slider, "session", "talkativeness"),
                                     (w.mute_button, "speech", "muted"), (w.overlay_button, "overlay", "visible")):
            model.bind(widget, section, key)
        w.source_button.clicked.connect(self.choose_source)
        w.settings_button.clicked.connect(self.open_settings)
        w.model_combo.currentIndexChanged.connect(self._model_shown)
        w.model_combo.activated.connect(lambda _i: self.fit_pace(w.model_combo.currentData() or ""))
        page = window.model_page
        page.removed.connect(self.model_removed)
        page.changed.connect(self.refresh_models)
        page.default_chosen.connect(lambda name: (self.set_model(name), self.fit_pace(name), window.save_settings()))
        window.train_page.use_model.connect(lambda name: (page.refresh(), self.set_model(name), self.fit_pace(name)))
        self.refresh_models()
        window.voice.settings = model.settings.speech  # the microphone reads the live speech settings
        model.observe("session", self._session_changed)
        model.observe("speech", self._speech_changed)
        model.observe("overlay", self._overlay_changed)
        model.observe("shortcuts", lambda _key, _value: self._show_keys())
        self._place_overlay()
        self.keys = ShortcutKeys(window, model, {
            "pause": window.toggle_pause, "ask": window.focus_question, "mute": self.toggle_mute,
            "overlay": self.toggle_overlay, "talk": window.push_to_talk}, quit=window.quit_app)

    # ---- what settings drive ----------------------------------------------------------------------
    def _session_changed(self, key: str, value: Any) -> None:
        if key == "source":
            self.window.watch.source_label.setText(describe(value))
            self.window.watch.source_label.setToolTip(value)
        elif key == "talkativeness":
            self.window.controller.set_talkativeness(float(value))  # the running session, from its next step

    def _speech_changed(self, key: str, value: Any) -> None:
        speaker = self.window.speech.speaker
        if key == "muted":
            self.window.speech.set_muted(value)  # turning the voice on checks the way to the speakers again
            self.label_mute()
        elif key == "voice":
            speaker.voice = value
        elif key == "rate":
            speaker.rate = value

    def _overlay_changed(self, key: str, value: Any) -> None:
        overlay = self.window.overlay
        if key == "visible":
            overlay.set_user_visible(value)  # hidden overlay + capture on: a small "Watching" pill stays
        elif key == "click_through":
            overlay.set_click_through(value)
        elif key in ("fade_seconds", "font_size"):
            setattr(overlay, key, value)
        elif key == "opacity":
            overlay.panel_opacity = value
        overlay.update()

    def _place_overlay(self) -> None:
        """Where the overlay was left (saved with the settings), else the primary screen's bottom right."""
        o, overlay = self.model.settings.overlay, self.window.overlay
        if o.x >= 0 and o.y >= 0:
            overlay.move(o.x, o.y)
        else:
            screen = QGuiApplication.primaryScreen()
            if screen is not None:
                g = screen.availableGeometry()
                overlay.move(g.right() - o.width - 24, g.bottom() - o.height - 48)
        overlay.resize(o.width, o.height)

    def _show_keys(self) -> None:
        k = self.model.settings.shortcuts
        self.window.watch.question.setPlaceholderText(f"Ask about what Duet sees…  ({k.ask}, or {k.talk} to speak)")

    def label_mute(self) -> None:
        """The voice button says whether replies are spoken, and why they cannot be heard when so."""
        muted = self.model.settings.speech.muted
        blocked = getattr(self.window.speech, "blocked", None) if not muted else None
        button = self.window.watch.mute_button
        button.setText("Voice off" if muted else ("Voice on ⚠ no sound" if blocked else "Voice on"))
        button.setToolTip(blocked or "")

    # ---- actions that change settings -------------------------------------------------------------
    def set_muted(self, muted: bool) -> None:
        self.model.set("speech", "muted", muted)

    def toggle_mute(self) -> None:
        self.set_muted(not self.model.settings.speech.muted)

    def set_overlay_visible(self, visible: bool) -> None:
        self.model.set("overlay", "visible", visible)

    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self.model.settings.overlay.visible)

    def choose_source(self) -> None:
        spec = pick_source(self.model.settings.session.source, self.window)
        if spec:
            self.set_source(spec)

    def set_source(self, spec: str) -> None:
        """Watch ``spec`` from the next Start; a video file is kept in one form (a path, not ``file:``+path),
        so the settings, the saved session and the Sessions tab show the same thing however it was chosen."""
        self.model.set("session", "source", canonical_spec(spec))

    # ---- the model to watch with ------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Offer what the library has (never the random test model unless asked for: app/ui/model_choice.py)."""
        chosen = fill_combo(self.window.watch.model_combo, self.window.library, self.model.settings.session.model,
                            explicit=self.explicit_model)
        if chosen:
            self.model.set("session", "model", chosen)

    def _model_shown(self, _index: int) -> None:
        name = self.window.watch.model_combo.currentData()
        if name:  # "No model yet" is no model
            self.model.set("session", "model", name)

    def set_model(self, spec: str) -> None:
        """Select a model by reference (library name, "tiny", "demo" or a GGUF path)."""
        self.explicit_model = spec
        self.model.set("session", "model", spec)
        self.window.watch.model_combo.setCurrentIndex(-1)
        self.refresh_models()

    def model_removed(self, name: str) -> None:
        """The user deleted a model on the Models page: never keep offering it (Start would fail on its files)."""
        combo, page = self.window.watch.model_combo, self.window.model_page
        was = combo.currentData()
        if self.explicit_model == name:
            self.explicit_model = ""
        if self.model.settings.session.model == name:
            self.model.set("session", "model", "")
        if was == name:
            combo.setCurrentIndex(-1)  # pick again among what is left
        self.refresh_models()
        now = combo.currentData()
        if was != name:
            return
        if now:
            self.fit_pace(now)
            page.library_message.setText(f"Deleted {name}. The Watch tab now uses {combo.currentText()}.")
        else:
            page.library_message.setText(f"Deleted {name}. No model is left: download or import one below.")
            self.window.show_problem(no_model_message(), cause="no model")
        self.window.save_settings()

    def fit_pace(self, name: str) -> bool:
        """Slow the pace to the recommendation's when the user picks a model the size of MMDuet2 on a machine that
        needs it (on 2 CPU cores a frame every 3–3.5 s, not 1 s); True if it did. The pace stays the user's to change:
        this runs when a model is chosen, never at start."""
        entry = self.window.library.get(name) if name else None
        if entry is None:
            return False
        try:
            size = entry.model.stat().st_size
        except OSError:
            return False
        rec = self.window.model_page.rec
        interval = hardware.pace_for(size, rec)
        if interval is None or self.model.settings.session.interval >= interval:
            return False
        self.model.set("session", "interval", interval)  # the Every box follows
        self.window.watch.chat.add_notice(
            f"Pace set to a frame every {interval:g} s: what {name} on {rec.device} keeps up with "
            f"(Models › This machine). A shorter “Every” makes Duet skip frames and look at each in less detail.")
        return True

    # ---- the Settings dialog ----------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        speech = self.window.speech
        note = "" if speech.speaker.available is not False else (speech.speaker.error or "")
        hw = self.window.model_page.hw  # detected once, when the Models page was built
        dlg = SettingsDialog(self.model.settings, voices=speech.speaker.voices, speech_note=note,
                             voice_input=self.window.voice, gpus=hw.gpus, gpus_unused=hw.gpus_unused,
                             parent=self.window)
        dlg.accepted.connect(lambda: self.apply_settings(dlg.result_settings()))
        dlg.open()
        return dlg

    def apply_settings(self, settings: Settings) -> None:
        """Take what the dialog edits (the rest is the Watch tab's and the windows' own), and save."""
        self.model.update(settings, edits)
        self.window.save_settings()
