"""The settings dialog: speech (voice, rate, mute, spoken questions), overlay, shortcuts, the engine.

It edits a copy and hands it back on OK; the main window takes what :func:`edits` names and saves it.
Session knobs (interval, frames per turn, talkativeness) live in the main window, where they are used.
Its number controls are bound to the copy through a :class:`~app.ui.settings_model.SettingsModel`, which
gives each its declared range. The Engine tab holds what the engine starts with: the GPU choice
(``[session] gpu``: the GPUs hardware detection found, as ``duet models recommend`` numbers them, plus
"Automatic" and "CPU only"), the context window (``[session] n_ctx``, as ``--n-ctx``) and the CPU threads
(``[session] n_threads``, as ``--threads``); the window turns them into the engine's
:class:`~app.core.config.BackendSettings` at the next Start.
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

from app.core.config import GPU_AUTO, GPU_CPU_ONLY
from app.core.settings import Settings
from app.modelhub.hardware import GpuInfo
from app.speech.recorder import input_devices
from app.speech.stt import MODEL_SIZES_MB, find_model, model_filename, models_dir
from app.ui.chat_view import soft_wrap
from app.ui.settings_model import SettingsModel

# What the dialog edits, by settings.toml section (None: all of it). The rest of the settings are the Watch
# tab's (source, model, pace) or where the windows are, which the dialog must not put back as they were.
EDITS: dict[str, tuple[str, ...] | None] = {
    "speech": None, "shortcuts": None,
    "overlay": ("visible", "click_through", "opacity", "fade_seconds", "font_size"),
    "session": ("gpu", "n_ctx", "n_threads"),
}


def edits(section: str, key: str) -> bool:
    """True for a setting the dialog edits (the window takes these on OK)."""
    return section in EDITS and (EDITS[section] is None or key in EDITS[section])  # type: ignore[operator]

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
                 speech_note: str = "", voice_input: object = None, gpus: list[GpuInfo] | None = None,
                 gpus_unused: list[GpuInfo] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duet settings")
        self.resize(620, 460)
        self.value = copy.deepcopy(settings)
        self.model = SettingsModel(self.value, parent=self)  # binds the controls below to the copy
        self.voice_input = voice_input
        tabs = QTabWidget()
        tabs.addTab(self._speech_tab(voices or [], speech_note), "Speech")
        tabs.addTab(self._overlay_tab(), "Overlay")
        tabs.addTab(self._shortcut_tab(), "Shortcuts")
        tabs.addTab(self._engine_tab(gpus or [], gpus_unused or []), "Engine")
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
        self.model.bind(self.muted, "speech", "muted")
        form.addRow("Speech", self.muted)
        self.voice = QComboBox()
        self.voice.addItem("System default", "")
        for vid, name in voices:
            self.voice.addItem(name, vid)
        i = self.voice.findData(s.voice)
        self.voice.setCurrentIndex(max(0, i))
        form.addRow("Voice", self.voice)
        self.rate = QSpinBox()
        self.rate.setSuffix(" words/min")
        self.model.bind(self.rate, "speech", "rate")
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
        page = QWidget()
        form = QFormLayout(page)
        self.overlay_visible = QCheckBox("Show the overlay")
        self.model.bind(self.overlay_visible, "overlay", "visible")
        form.addRow("Overlay", self.overlay_visible)
        self.click_through = QCheckBox("Clicks pass through to the window below")
        self.model.bind(self.click_through, "overlay", "click_through")
        form.addRow("Click-through", self.click_through)
        self.opacity = QDoubleSpinBox()
        self.opacity.setSingleStep(0.05)
        self.model.bind(self.opacity, "overlay", "opacity")
        form.addRow("Background opacity", self.opacity)
        self.fade = QDoubleSpinBox()
        self.fade.setSuffix(" s")
        self.model.bind(self.fade, "overlay", "fade_seconds")
        form.addRow("Replies fade after", self.fade)
        self.font_size = QSpinBox()
        self.model.bind(self.font_size, "overlay", "font_size")
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

    def _engine_tab(self, gpus: list[GpuInfo], unused: list[GpuInfo]) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        self.gpu = QComboBox()
        self.gpu.addItem("Automatic (llama.cpp's choice)", GPU_AUTO)
        self.gpu.addItem("CPU only", GPU_CPU_ONLY)
        for g in gpus:
            memory = f" · {g.total / 2**30:.0f} GB" if g.total else ""
            self.gpu.addItem(f"GPU {g.index}: {g.description or g.name}{memory}", g.index)
        chosen = self.value.session.gpu
        if self.gpu.findData(chosen) < 0:  # a GPU chosen earlier that detection does not find now: kept, said
            self.gpu.addItem(f"GPU {chosen} (not found now: the engine will fail to use it)", chosen)
        self.model.bind(self.gpu, "session", "gpu")
        form.addRow("Run the model on", self.gpu)
        self.n_ctx = QSpinBox()
        self.n_ctx.setSingleStep(1024)
        self.n_ctx.setSuffix(" tokens")
        self.model.bind(self.n_ctx, "session", "n_ctx")
        form.addRow("Context window", self.n_ctx)
        self.n_threads = QSpinBox()
        self.n_threads.setSpecialValueText("Automatic")  # 0: the one thread policy (app.core.config.resolve_threads)
        self.model.bind(self.n_threads, "session", "n_threads")
        form.addRow("CPU threads", self.n_threads)
        found = "No GPU this llama.cpp build can use was found" if not gpus else \
            f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} found"
        lines = [f"{found}. Takes effect at the next Start; in a terminal the same choices are "
                 "`--gpu N` (or `--gpu-layers 0` for CPU only), `--n-ctx` and `--threads` for `duet run` and "
                 "`duet serve`."]
        lines += [f"GPU {g.index}: {g.name} is present but this build cannot use it (`make gpu`)." for g in unused]
        note = QLabel(soft_wrap(" ".join(lines)))
        note.setWordWrap(True)
        note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.gpu_note = note
        form.addRow(note)
        return page

    def result_settings(self) -> Settings:
        """The edited copy (the bound controls wrote theirs as they changed; these are read now)."""
        v = self.value
        v.speech.voice = self.voice.currentData() or ""
        v.speech.stt_model = self.stt_model.currentData()
        v.speech.input_device = self.input_device.currentData() or ""
        for key, edit in self.keys.items():
            seq = edit.keySequence().toString()
            if seq:
                setattr(v.shortcuts, key, seq)
        return v

