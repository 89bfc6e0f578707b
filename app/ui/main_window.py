"""The main window: pick a source and a model, start / pause / stop, watch the chat fill.

It is a thin shell. The model loop runs in :class:`~app.ui.worker.SessionWorker` on its own thread;
this window only reacts to its signals: draws the preview, appends bubbles, feeds the overlay and
the speaker, and writes each step to the session store as it arrives (so a kill loses nothing).
Every failure arrives as a message (a red banner and a note in the chat), never a dialog that
blocks the event loop, and never a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QGuiApplication, QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.capture.parse import SourceSpecError, parse_spec
from app.core.sessions import SessionStore, SessionWriter, session_meta
from app.core.settings import Settings, SettingsStore
from app.core.types import Frame, StepResult
from app.engine.session import SessionConfig
from app.modelhub.library import ModelLibrary
from app.ui.chat_view import ChatView, clock
from app.ui.images import rgb_to_pixmap
from app.ui.model_page import ModelPage
from app.ui.overlay import CaptureExclusion, Overlay
from app.ui.sessions_page import SessionsPage
from app.ui.settings_dialog import SettingsDialog
from app.ui.source_picker import SourcePicker, describe
from app.ui.speech_bridge import SpeechBridge, VoiceInput
from app.ui.style import STYLE
from app.ui.train_page import TrainPage
from app.ui.tray import app_icon, make_tray
from app.ui.video_preview import PlayerPreview
from app.ui.worker import (
    BackendFactory,
    RunRequest,
    SessionThread,
    SessionWorker,
    SourceFactory,
    default_backend,
)

log = logging.getLogger("duet.ui")


def _section(text: str) -> QLabel:
    label = QLabel(text.upper())
    label.setObjectName("sectionTitle")
    return label


class MainWindow(QMainWindow):
    """States: idle → loading → running ⇄ paused → stopping → idle."""

    def __init__(self, settings_store: SettingsStore, *, session_store: SessionStore | None = None,
                 library: ModelLibrary | None = None, backend_factory: BackendFactory = default_backend,
                 source_factory: SourceFactory | None = None, speech: SpeechBridge | None = None,
                 voice_input: VoiceInput | None = None, tray: bool = True) -> None:
        super().__init__()
        self.store = settings_store
        self.settings: Settings = settings_store.load()
        self.sessions = session_store or SessionStore()
        self.library = library or ModelLibrary()
        self.state = "idle"
        self.writer: SessionWriter | None = None
        self.last_error = ""
        self.last_result: StepResult | None = None
        self.device = ""
        self.tray = None
        self.setWindowTitle("Duet")
        self.setWindowIcon(app_icon())
        self.setStyleSheet(STYLE)

        o = self.settings.overlay
        self.overlay = Overlay(fade_seconds=o.fade_seconds, font_size=o.font_size, opacity=o.opacity)
        self.exclusion = CaptureExclusion([self.overlay])
        self.worker = SessionWorker(backend_factory, source_factory, exclude=self.exclusion)
        self.runner = SessionThread(self.worker)
        self.worker.loading.connect(self._on_loading)
        self.worker.started.connect(self._on_started)
        self.worker.frame.connect(self._on_frame)
        self.worker.step.connect(self._on_step)
        self.worker.error.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.paused_changed.connect(self._on_paused)

        self.speech = speech or SpeechBridge(self.settings.speech)
        self.speech.unavailable.connect(self._speech_unavailable)
        self.voice = voice_input or VoiceInput(self.settings.speech)
        self.voice.transcribed.connect(self._on_transcribed)
        self.voice.problem.connect(self.show_problem)
        self.voice.state.connect(self._on_voice_state)

        self.player = PlayerPreview()
        self.player.image.connect(self._on_player_image)
        self.player.failed.connect(self._on_player_failed)

        self._build()
        self._apply_settings_to_controls()
        self._install_shortcuts()
        self.tray = make_tray(self) if tray else None
        self._poll = QTimer(self)
        self._poll.setInterval(500)
        self._poll.timeout.connect(self._poll_source)
        self._poll.start()
        if settings_store.recovered_from is not None:
            self.show_problem(f"The settings file was damaged; it was set aside as "
                              f"{settings_store.recovered_from.name} and defaults were restored.")
        self._set_state("idle")

    # ---- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.addTab(self._watch_tab(), "Watch")
        self.sessions_page = SessionsPage(self.sessions)
        self.tabs.addTab(self.sessions_page, "Sessions")
        self.model_page = ModelPage(self.library)
        self.model_page.changed.connect(self._refresh_models)
        self.tabs.addTab(self.model_page, "Models")
        self.train_page = TrainPage(self.sessions)
        self.train_page.use_model.connect(lambda name: (self.model_page.refresh(), self.set_model(name)))
        self.tabs.addTab(self.train_page, "Train")
        self.tabs.currentChanged.connect(self._tab_changed)
        self.setCentralWidget(self.tabs)

        bar = self.statusBar()
        self.watching_label = QLabel()
        self.watching_label.setObjectName("watching")
        self.latency_label = QLabel("step —")
        self.rtf_label = QLabel("RTF —")
        self.context_label = QLabel("context —")
        self.device_label = QLabel("device —")
        self.source_status = QLabel("")
        for w in (self.watching_label, self.source_status):
            bar.addWidget(w)
        for w in (self.latency_label, self.rtf_label, self.context_label, self.device_label):
            bar.addPermanentWidget(w)
        s = self.settings.window
        self.resize(s.width, s.height)
        if s.x >= 0 and s.y >= 0:
            self.move(s.x, s.y)

    def _watch_tab(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        outer.setContentsMargins(14, 12, 14, 8)
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        outer.addWidget(self.banner)

        side = QFrame()
        side.setObjectName("sidePanel")
        side.setMinimumWidth(380)
        col = QVBoxLayout(side)
        col.setContentsMargins(16, 14, 16, 14)
        col.setSpacing(8)
        col.addWidget(_section("Watching"))
        src_row = QHBoxLayout()
        self.source_label = QLabel()
        self.source_label.setObjectName("sourceName")
        self.source_button = QPushButton("Choose…")
        self.source_button.clicked.connect(self.choose_source)
        src_row.addWidget(self.source_label, 1)
        src_row.addWidget(self.source_button)
        col.addLayout(src_row)
        self.preview = QLabel("Preview appears here once Duet is watching")
        self.preview.setObjectName("preview")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(340, 200)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        col.addWidget(self.preview, 1)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("▶  Start")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("❚❚  Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("■  Stop")
        self.stop_button.setObjectName("danger")
        self.stop_button.clicked.connect(self.stop)
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        col.addLayout(buttons)

        col.addWidget(_section("Model"))
        self.model_combo = QComboBox()
        col.addWidget(self.model_combo)
        self._refresh_models()

        col.addWidget(_section("Pace"))
        grid = QGridLayout()
        self.interval_spin = QDoubleSpinBox()
        self.interval_spin.setRange(0.2, 10.0)
        self.interval_spin.setSingleStep(0.25)
        self.interval_spin.setSuffix(" s")
        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(1, 4)
        self.talk_slider = QSlider(Qt.Orientation.Horizontal)
        self.talk_slider.setRange(-50, 50)
        self.talk_value = QLabel()
        self.talk_slider.valueChanged.connect(self._on_talkativeness)
        grid.addWidget(QLabel("Every"), 0, 0)
        grid.addWidget(self.interval_spin, 0, 1)
        grid.addWidget(QLabel("Frames per turn"), 1, 0)
        grid.addWidget(self.frames_spin, 1, 1)
        quiet, chatty = QLabel("Quiet"), QLabel("Chatty")
        talk_row = QHBoxLayout()
        talk_row.addWidget(quiet)
        talk_row.addWidget(self.talk_slider, 1)
        talk_row.addWidget(chatty)
        talk_row.addWidget(self.talk_value)
        grid.addLayout(talk_row, 2, 0, 1, 2)
        col.addLayout(grid)

        tools = QHBoxLayout()
        self.mute_button = QPushButton("Voice on")
        self.mute_button.setCheckable(True)
        self.mute_button.toggled.connect(self.set_muted)
        self.overlay_button = QPushButton("Overlay")
        self.overlay_button.setCheckable(True)
        self.overlay_button.toggled.connect(self.set_overlay_visible)
        settings = QPushButton("Settings…")
        settings.clicked.connect(self.open_settings)
        for b in (self.mute_button, self.overlay_button, settings):
            tools.addWidget(b)
        col.addLayout(tools)

        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.setContentsMargins(8, 0, 0, 0)
        rcol.addWidget(_section("Conversation"))
        self.chat = ChatView(corrections=True)
        self.chat.feedback.connect(self._on_feedback)
        self.chat.correction.connect(self._on_correction)
        rcol.addWidget(self.chat, 1)
        ask_row = QHBoxLayout()
        self.question = QLineEdit()
        self.question.setPlaceholderText("Ask about what Duet sees…")
        self.question.returnPressed.connect(self.ask_from_box)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("primary")
        self.ask_button.clicked.connect(self.ask_from_box)
        self.talk_button = QPushButton("●  Talk")
        self.talk_button.setObjectName("talk")
        self.talk_button.setCheckable(True)
        self.talk_button.clicked.connect(self.push_to_talk)
        ask_row.addWidget(self.question, 1)
        ask_row.addWidget(self.ask_button)
        ask_row.addWidget(self.talk_button)
        rcol.addLayout(ask_row)

        split = QSplitter()
        split.addWidget(side)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([480, 760])
        outer.addWidget(split, 1)
        return page

    def _refresh_models(self) -> None:
        current = self.model_combo.currentData() or self.settings.session.model or "tiny"
        self.model_combo.clear()
        for name in self.model_page.model_names() if hasattr(self, "model_page") else ["tiny"]:
            label = {"tiny": "tiny — built-in test model", "demo": "demo — offline demo model"}.get(name, name)
            self.model_combo.addItem(label, name)
        if self.model_combo.findData(current) < 0:  # a path or a model removed since
            self.model_combo.addItem(current, current)
        self.model_combo.setCurrentIndex(self.model_combo.findData(current))

    def _apply_settings_to_controls(self) -> None:
        s = self.settings
        self.source_label.setText(describe(s.session.source))
        self._refresh_models()
        self.interval_spin.setValue(s.session.interval)
        self.frames_spin.setValue(s.session.frames_per_turn)
        self.talk_slider.setValue(round(s.session.talkativeness))
        self._on_talkativeness(self.talk_slider.value())
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
        self.question.setPlaceholderText(f"Ask about what Duet sees…  ({k.ask}, or {k.talk} to speak)")

    # ---- state ---------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        active = state in ("loading", "running", "paused")
        self.start_button.setEnabled(state == "idle")
        self.pause_button.setEnabled(state in ("running", "paused"))
        self.stop_button.setEnabled(active)
        self.source_button.setEnabled(state == "idle")
        self.model_combo.setEnabled(state == "idle")
        self.interval_spin.setEnabled(state == "idle")
        self.frames_spin.setEnabled(state == "idle")
        self.pause_button.setText("▶  Resume" if state == "paused" else "❚❚  Pause")
        watching = state == "running"
        self.overlay.set_capturing(watching, self.source_label.text() if watching else "")
        self.watching_label.setText({"running": "● Watching", "paused": "❚❚ Paused", "loading": "… Starting",
                                     "stopping": "… Stopping"}.get(state, "○ Idle"))
        if self.tray is not None:
            self.tray.setIcon(app_icon(recording=watching))
            self.tray.setToolTip(f"Duet — {self.watching_label.text()}")

    def _collect_settings(self) -> None:
        s = self.settings.session
        s.model = self.model_combo.currentData() or s.model
        s.interval = round(self.interval_spin.value(), 3)
        s.frames_per_turn = self.frames_spin.value()
        s.talkativeness = float(self.talk_slider.value())

    def save_settings(self) -> None:
        self._collect_settings()
        w = self.settings.window
        w.x, w.y, w.width, w.height = self.x(), self.y(), self.width(), self.height()
        o = self.settings.overlay
        o.x, o.y, o.width, o.height = self.overlay.x(), self.overlay.y(), self.overlay.width(), self.overlay.height()
        try:
            self.store.save(self.settings)
        except OSError as e:
            self.show_problem(f"Settings could not be saved: {e}")

    # ---- actions -------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        if self.state != "idle":
            return
        self.hide_problem()
        self._collect_settings()
        self.save_settings()
        s = self.settings.session
        try:
            config = SessionConfig(interval=s.interval, frames_per_turn=s.frames_per_turn,
                                   talkativeness=s.talkativeness, max_new_tokens=48)
        except ValueError as e:
            self.show_problem(str(e))
            return
        self.chat.clear()
        self.overlay.clear()
        self.last_result = None
        try:
            video = self._file_of(s.source)
            self.writer = self.sessions.create(session_meta(
                s.source, s.model, interval=s.interval, frames_per_turn=s.frames_per_turn,
                tokens_per_frame=config.tokens_per_frame, talkativeness=s.talkativeness,
                video=str(video.resolve()) if video else None))
        except OSError as e:
            self.writer = None
            self.show_problem(f"This session cannot be saved ({e}); it will run without a transcript.")
        self._set_state("loading")
        self.runner.start(RunRequest(source=s.source, model=s.model, config=config))

    @Slot()
    def stop(self) -> None:
        if self.state in ("loading", "running", "paused"):
            self._set_state("stopping")
            self.worker.request_stop()

    @Slot()
    def toggle_pause(self) -> None:
        if self.state in ("running", "paused"):
            self.worker.set_paused(self.state == "running")

    def ask(self, text: str, *, spoken: bool = False) -> bool:
        text = text.strip()
        if not text:
            return False
        if self.state not in ("running", "paused", "loading") or not self.worker.ask(text):
            self.show_problem("Start watching first, then ask: the question rides with the next frames.")
            return False
        at = self.last_result.video_time if self.last_result else 0.0
        self.chat.add_question(text, at, spoken=spoken)
        if self.writer is not None:
            self.writer.add_question(text, spoken=spoken)
        return True

    @Slot()
    def ask_from_box(self) -> None:
        if self.ask(self.question.text()):
            self.question.clear()

    @Slot()
    def focus_question(self) -> None:
        self.show_and_raise()
        self.tabs.setCurrentIndex(0)
        self.question.setFocus()

    @Slot()
    def push_to_talk(self) -> None:
        self.voice.toggle()

    @Slot(bool)
    def set_muted(self, muted: bool) -> None:
        self.settings.speech.muted = muted
        self.speech.set_muted(muted)
        self._label_mute(muted)
        if self.mute_button.isChecked() != muted:
            self.mute_button.setChecked(muted)

    def _label_mute(self, muted: bool) -> None:
        self.mute_button.setText("Voice off" if muted else "Voice on")

    @Slot()
    def toggle_mute(self) -> None:
        self.set_muted(not self.settings.speech.muted)

    @Slot(bool)
    def set_overlay_visible(self, visible: bool) -> None:
        self.settings.overlay.visible = visible
        self.overlay.setVisible(visible)
        if self.overlay_button.isChecked() != visible:
            self.overlay_button.setChecked(visible)

    @Slot()
    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self.overlay.isVisible())

    @Slot()
    def show_and_raise(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    @Slot()
    def choose_source(self) -> None:
        picker = SourcePicker(self.settings.session.source, self)
        if picker.exec():
            self.set_source(picker.spec())

    def set_model(self, spec: str) -> None:
        """Select a model by reference (library name, "tiny", "demo" or a GGUF path)."""
        self.settings.session.model = spec
        self.model_combo.setCurrentIndex(-1)
        self._refresh_models()

    def set_source(self, spec: str) -> None:
        self.settings.session.source = spec
        self.source_label.setText(describe(spec))

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

    # ---- messages ------------------------------------------------------------------------------
    @Slot(str)
    def show_problem(self, text: str) -> None:
        self.last_error = text
        self.banner.setText(text)
        self.banner.show()
        self.statusBar().showMessage(text, 8000)

    def hide_problem(self) -> None:
        self.banner.hide()

    @Slot(str)
    def _speech_unavailable(self, text: str) -> None:
        self.chat.add_notice(text)

    # ---- worker signals ------------------------------------------------------------------------
    @Slot(str)
    def _on_loading(self, what: str) -> None:
        self.statusBar().showMessage(what)

    @Slot(str, str)
    def _on_started(self, device: str, source_name: str) -> None:
        self.device = device
        self.device_label.setText(f"device {device}")
        self.statusBar().clearMessage()
        if self.writer is not None:
            self.writer.update_meta(device=device, source_name=source_name)
        if self.state == "loading":
            self._set_state("running")
        path = self._file_of(self.settings.session.source)
        if path is not None and self.player.available:
            self.player.play(path)

    @staticmethod
    def _file_of(spec: str) -> Path | None:
        try:
            parsed = parse_spec(spec)
        except SourceSpecError:
            return None
        return Path(parsed.path) if parsed.kind == "file" else None

    @Slot(object)
    def _on_frame(self, frame: Frame) -> None:
        if self.player.active:  # the player draws the film; keep it on the model's moment
            self.player.sync(frame.time)
            return
        size = self.preview.size()
        self.preview.setPixmap(rgb_to_pixmap(frame.image, size.width() - 4, size.height() - 4))

    @Slot(QImage)
    def _on_player_image(self, image: QImage) -> None:
        size = self.preview.size()
        self.preview.setPixmap(QPixmap.fromImage(image).scaled(
            size.width() - 4, size.height() - 4, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation))

    @Slot(str)
    def _on_player_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"In-app playback unavailable ({message}); showing the sampled frames", 8000)

    @Slot(object)
    def _on_step(self, r: StepResult) -> None:
        self.last_result = r
        shown = False
        if not r.silent:
            shown = self.overlay.add_reply(r.text, clock(r.video_time))
            self.chat.add_reply(r.text, r.video_time, r.turn, r.frames[-1].image if r.frames else None)
            if shown:
                self.speech.say(r.text)
        if self.writer is not None:
            try:
                self.writer.add_step(r, folded=not r.silent and not shown)
            except OSError as e:
                self.show_problem(f"The transcript could not be written ({e}); the session goes on unsaved.")
                self.writer = None
        video_s = max(1e-6, len(r.frames) * (self.interval_spin.value() or 1.0))
        rtf = r.timings.total_ms / 1000 / video_s
        self.latency_label.setText(f"step {r.timings.total_ms:.0f} ms")
        self.rtf_label.setText(f"RTF {rtf:.2f}")
        fill = 100 * r.n_tokens / r.n_ctx if r.n_ctx else 0
        self.context_label.setText(f"context {r.n_tokens}/{r.n_ctx} ({fill:.0f}%)")

    @Slot(str)
    def _on_error(self, msg: str) -> None:
        self.show_problem(msg)
        self.chat.add_notice(msg)

    @Slot(str)
    def _on_finished(self, reason: str) -> None:
        if self.writer is not None:
            self.writer.close(reason)
            self.writer = None
        if reason == "ended":
            self.chat.add_notice("The source ended; the session is saved in the Sessions tab.")
        self.player.stop()
        self._set_state("idle")
        self.source_status.setText("")
        self.sessions_page.refresh()

    @Slot(bool)
    def _on_paused(self, paused: bool) -> None:
        if self.state in ("running", "paused"):
            self._set_state("paused" if paused else "running")

    @Slot(str)
    def _on_transcribed(self, text: str) -> None:
        if not self.ask(text, spoken=True):
            self.question.setText(text)

    @Slot(str)
    def _on_voice_state(self, state: str) -> None:
        self.talk_button.setChecked(state == "recording")
        self.talk_button.setText({"recording": "■  Listening…", "transcribing": "…  Transcribing",
                                  "downloading": "⇣  Downloading"}.get(state, "●  Talk"))

    @Slot(int, str, bool)
    def _on_feedback(self, turn: int, kind: str, on: bool) -> None:
        if self.writer is not None:
            self.writer.add_feedback(turn, kind, on)

    @Slot(int, str)
    def _on_correction(self, turn: int, text: str) -> None:
        if self.writer is not None:
            self.writer.add_feedback(turn, "wrong", True, text)

    def _on_talkativeness(self, value: int) -> None:
        self.talk_value.setText(f"{value:+d}")
        self.worker.set_talkativeness(float(value))

    @Slot()
    def _poll_source(self) -> None:
        src = self.worker.source
        if src is None or self.state not in ("running", "paused"):
            return
        try:
            status = src.status
        except Exception:
            return
        self.source_status.setText(status)
        if "lost" in status or "not visible" in status:
            self.show_problem(f"{src.name}: {status}")
        elif self.banner.isVisible() and self.banner.text().startswith(f"{src.name}:"):
            self.hide_problem()

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.sessions_page:
            self.sessions_page.refresh()

    # ---- shutdown ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.save_settings()
        self._poll.stop()
        self.runner.close()
        if self.writer is not None:
            self.writer.close("app closed")
            self.writer = None
        self.voice.close()
        self.speech.close()
        self.player.stop()
        self.overlay.close()
        if self.tray is not None:
            self.tray.hide()
        super().closeEvent(event)
