"""The settings dialog: speech (voice, rate, mute, spoken questions), overlay, shortcuts.

It edits a copy and hands it back on OK; the main window applies and saves it. Session knobs
(interval, frames per turn, talkativeness) live in the main window, where they are used.
"""

from __future__ import annotations

import copy

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.settings import Settings
from app.speech.recorder import input_devices
from app.speech.stt import MODEL_SIZES_MB, find_model, model_filename, models_dir
from app.ui.chat_view import soft_wrap

SHORTCUT_LABELS = {
    "pause": "Pause / resume watching",
    "ask": "Type a question",
    "talk": "Push-to-talk (press, speak, press again)",
    "mute": "Mute / unmute speech",
    "overlay": "Show / hide the overlay",
}


class ShortcutEdit(QKeySequenceEdit):
    """A key-sequence field where Esc means "close the dialog", as everywhere else, not a shortcut."""

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() == Qt.Key.Key_Escape and not event.modifiers():
            event.ignore()  # passes up to the dialog, which closes on Esc
            return
        super().keyPressEvent(event)


class SettingsDialog(QDialog):
    """Never wider than the screen: long messages wrap (even unbroken paths and URLs)."""

    def __init__(self, settings: Settings, *, voices: list[tuple[str, str]] | None = None,
                 speech_note: str = "", voice_input: object = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duet settings")
        self.resize(620, 460)
        self.value = copy.deepcopy(settings)
        self.voice_input = voice_input
        tabs = QTabWidget()
        tabs.addTab(self._speech_tab(voices or [], speech_note), "Speech")
        tabs.addTab(self._overlay_tab(), "Overlay")
        tabs.addTab(self._shortcut_tab(), "Shortcuts")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(buttons)
        screen = (parent.screen() if parent is not None else None) or QGuiApplication.primaryScreen()
        if screen is not None:
            avail = screen.availableGeometry()
            self.setMaximumSize(avail.width(), avail.height())
            self.resize(min(self.width(), avail.width()), min(self.height(), avail.height()))

    def _speech_tab(self, voices: list[tuple[str, str]], note: str) -> QWidget:
        s = self.value.speech
        page = QWidget()
        form = QFormLayout(page)
        self.muted = QCheckBox("Don't speak replies")
        self.muted.setChecked(s.muted)
        form.addRow("Speech", self.muted)
        self.voice = QComboBox()
        self.voice.addItem("System default", "")
        for vid, name in voices:
            self.voice.addItem(name, vid)
        i = self.voice.findData(s.voice)
        self.voice.setCurrentIndex(max(0, i))
        form.addRow("Voice", self.voice)
        self.rate = QSpinBox()
        self.rate.setRange(*_bounds("speech", "rate"))
        self.rate.setSuffix(" words/min")
        self.rate.setValue(s.rate)
        form.addRow("Rate", self.rate)
        if note:
            warn = QLabel(soft_wrap(note))
            warn.setWordWrap(True)
            warn.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            warn.setObjectName("banner")
            form.addRow(warn)
        form.addRow(QLabel("<b>Spoken questions</b>"))
        self.stt_model = QComboBox()
        for name, mb in MODEL_SIZES_MB.items():
            self.stt_model.addItem(f"{name} ({mb} MB)", name)
        self.stt_model.setCurrentIndex(max(0, self.stt_model.findData(s.stt_model)))
        form.addRow("Speech model", self.stt_model)
        row = QHBoxLayout()
        self.stt_status = QLabel()
        self.stt_status.setWordWrap(True)
        self.stt_status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.download = QPushButton("Download")
        self.download.clicked.connect(self._download)
        self.progress = QProgressBar()
        self.progress.hide()
        row.addWidget(self.stt_status, 1)
        row.addWidget(self.download)
        form.addRow("", row)
        form.addRow("", self.progress)
        self.stt_model.currentIndexChanged.connect(self._update_stt_status)
        self._update_stt_status()
        self.input_device = QComboBox()
        self.input_device.addItem("System default", "")
        for name in input_devices():
            self.input_device.addItem(name, name)
        self.input_device.setCurrentIndex(max(0, self.input_device.findData(s.input_device)))
        if self.input_device.count() == 1:
            self.input_device.setToolTip("No microphone found; questions can still be typed.")
        form.addRow("Microphone", self.input_device)
        return page

    def show_status(self, text: str) -> None:
        """A speech-model message (a download error can be one very long line): wrapped, never widening."""
        self.stt_status.setText(soft_wrap(text))
        self.stt_status.setToolTip(text)

    def _update_stt_status(self) -> None:
        name = self.stt_model.currentData()
        path = find_model(name)
        self.show_status(f"Installed: {path}" if path else f"Not downloaded ({model_filename(name)} → {models_dir()})")
        self.download.setEnabled(path is None and self.voice_input is not None)

    def _download(self) -> None:
        vi = self.voice_input
        if vi is None:
            return
        vi.settings.stt_model = self.stt_model.currentData()  # type: ignore[attr-defined]
        self.progress.show()
        vi.download_progress.connect(self._on_progress)  # type: ignore[attr-defined]
        vi.problem.connect(self.show_status)  # type: ignore[attr-defined]
        vi.download()  # type: ignore[attr-defined]

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * done / max(1, total)))
        if done >= total:
            self._update_stt_status()

    def _overlay_tab(self) -> QWidget:
        o = self.value.overlay
        page = QWidget()
        form = QFormLayout(page)
        self.overlay_visible = QCheckBox("Show the overlay")
        self.overlay_visible.setChecked(o.visible)
        form.addRow("Overlay", self.overlay_visible)
        self.click_through = QCheckBox("Clicks pass through to the window below")
        self.click_through.setChecked(o.click_through)
        form.addRow("Click-through", self.click_through)
        self.opacity = QDoubleSpinBox()
        self.opacity.setRange(*_bounds("overlay", "opacity"))
        self.opacity.setSingleStep(0.05)
        self.opacity.setValue(o.opacity)
        form.addRow("Background opacity", self.opacity)
        self.fade = QDoubleSpinBox()
        self.fade.setRange(*_bounds("overlay", "fade_seconds"))
        self.fade.setSuffix(" s")
        self.fade.setValue(o.fade_seconds)
        form.addRow("Replies fade after", self.fade)
        self.font_size = QSpinBox()
        self.font_size.setRange(*_bounds("overlay", "font_size"))
        self.font_size.setValue(o.font_size)
        form.addRow("Text size", self.font_size)
        return page

    def _shortcut_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.keys: dict[str, ShortcutEdit] = {}
        for key, label in SHORTCUT_LABELS.items():
            edit = ShortcutEdit(QKeySequence(getattr(self.value.shortcuts, key)))
            self.keys[key] = edit
            form.addRow(label, edit)
        note = QLabel("Click a field and press the new keys. Esc closes this dialog. Shortcuts work while a "
                      "Duet window has focus; for a global hotkey, bind one in your desktop's keyboard settings.")
        note.setWordWrap(True)
        form.addRow(note)
        return page

    def result_settings(self) -> Settings:
        v = self.value
        v.speech.muted = self.muted.isChecked()
        v.speech.voice = self.voice.currentData() or ""
        v.speech.rate = self.rate.value()
        v.speech.stt_model = self.stt_model.currentData()
        v.speech.input_device = self.input_device.currentData() or ""
        v.overlay.visible = self.overlay_visible.isChecked()
        v.overlay.click_through = self.click_through.isChecked()
        v.overlay.opacity = round(self.opacity.value(), 2)
        v.overlay.fade_seconds = self.fade.value()
        v.overlay.font_size = self.font_size.value()
        for key, edit in self.keys.items():
            seq = edit.keySequence().toString()
            if seq:
                setattr(v.shortcuts, key, seq)
        return v


def _bounds(section: str, key: str) -> tuple:
    """A spin box's range: the one settings.toml is checked against (app/core/config.APP_LIMITS)."""
    from app.core.config import APP_LIMITS

    lim = APP_LIMITS[section, key]
    return lim.low, lim.high
