"""The main window: layout and signal wiring around the Qt-free session controller.

The session itself (states, pause, transcript, source health) is
:class:`~app.engine.controller.SessionController`, run on its own thread by
:class:`~app.ui.worker.SessionWorker`; the Watch tab's widgets are :class:`~app.ui.watch_panel.WatchPanel`.
This window connects the two: draws the preview, appends bubbles, feeds the overlay and the speaker.
Every failure arrives as a message (a red banner and a note in the chat), never a dialog that
blocks the event loop, and never a crash.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QThread, QTimer, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QApplication, QHBoxLayout, QMainWindow, QMessageBox, QTabWidget, QWidget

from app.capture.base import SourceHealth
from app.core.config import BackendSettings, SessionConfig, backend_for_gpu
from app.core.errors import SettingError, describe_write_failure
from app.core.sessions import SessionStore
from app.core.settings import Settings, SettingsStore
from app.core.timefmt import clock
from app.core.types import Frame, StepResult
from app.engine.controller import Gap, HealthChanged, State
from app.modelhub.library import ModelLibrary
from app.ui.capture_exclusion import CaptureExclusion
from app.ui.model_choice import no_model_message
from app.ui.model_page import ModelPage
from app.ui.overlay import Overlay
from app.ui.reply_text import shown_text
from app.ui.sessions_page import SessionsPage
from app.ui.settings_model import SettingsModel
from app.ui.speech_bridge import SpeechBridge, VoiceInput
from app.ui.style import STYLE
from app.ui.train_page import TrainPage
from app.ui.tray import app_icon, make_tray
from app.ui.video_preview import PlayerPreview
from app.ui.watch_panel import SessionStatus, WatchPanel, video_file_of
from app.ui.window_marks import WindowMarksMixin
from app.ui.window_settings import SettingsSync, problems_on_opening
from app.ui.worker import (
    BackendFactory,
    RunRequest,
    SessionThread,
    SessionWorker,
    SourceFactory,
    default_backend,
)

log = logging.getLogger("duet.ui")


class MainWindow(WindowMarksMixin, QMainWindow):
    """States: idle → loading → running ⇄ paused → stopping → idle.

    Its settings are :attr:`model` (a :class:`~app.ui.settings_model.SettingsModel`), which the controls are
    bound to and the overlay, voice and shortcuts follow (:attr:`settings_sync`, app/ui/window_settings.py).
    """

    def __init__(self, settings_store: SettingsStore, *, session_store: SessionStore | None = None,
                 library: ModelLibrary | None = None, backend_factory: BackendFactory = default_backend,
                 source_factory: SourceFactory | None = None, speech: SpeechBridge | None = None,
                 voice_input: VoiceInput | None = None, tray: bool = True) -> None:
        super().__init__()
        self.store = settings_store
        self.model = SettingsModel(settings_store.load(), settings_store, parent=self)
        self.run_request: RunRequest | None = None  # what the latest session was started with
        self.sessions = session_store or SessionStore()
        self.library = library or ModelLibrary()
        self.last_result: StepResult | None = None
        self.state = State.IDLE  # mirrors the controller's state, updated as its signal arrives
        self.last_error = ""
        self.problem_cause = ""  # what the banner is about, so it goes when that is over ("ask", "no model")
        self.device = ""
        self.tray = None
        self.setWindowTitle("Duet")
        self.setWindowIcon(app_icon())
        self.setStyleSheet(STYLE)

        o = self.settings.overlay
        self.overlay = Overlay(fade_seconds=o.fade_seconds, font_size=o.font_size, opacity=o.opacity)
        self.exclusion = CaptureExclusion([self.overlay])
        self.worker = SessionWorker(backend_factory, source_factory, exclude=self.exclusion, store=self.sessions)
        self.controller = self.worker.controller
        self.runner = SessionThread(self.worker)
        self.worker.state_changed.connect(self._on_state)
        self.worker.loading.connect(self._on_loading)
        self.worker.started.connect(self._on_started)
        self.worker.frame.connect(self._on_frame)
        self.worker.step.connect(self._on_step)
        self.worker.gap.connect(self._on_gap)
        self.worker.health.connect(self._on_health)
        self.worker.problem.connect(self.show_problem)
        self.worker.error.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)

        self.speech = speech or SpeechBridge(self.settings.speech)
        self.speech.unavailable.connect(self._speech_unavailable)
        self.voice = voice_input or VoiceInput(self.settings.speech)
        self.voice.transcribed.connect(self._on_transcribed)
        self.voice.problem.connect(self.show_problem)
        self.voice.state.connect(self._on_voice_state)

        self.player = PlayerPreview()
        self.player.failed.connect(self._on_player_failed)

        self._build()
        self.player.image.connect(self.watch.show_picture)
        self.settings_sync = SettingsSync(self, self.model)
        self.tray = make_tray(self) if tray else None
        self._poll = QTimer(self)
        self._poll.setInterval(500)
        self._poll.timeout.connect(self._poll_source)
        self._poll.start()
        for problem in problems_on_opening(settings_store, self.library):
            self.show_problem(problem)
        self._show_state(State.IDLE)
        self.speech.check_output()  # a missing player or sound device is said now, not discovered later
        self.settings_sync.label_mute()
        if not self.watch.model_combo.currentData():
            self.show_problem(no_model_message(), cause="no model")  # the more urgent message keeps the banner

    @property
    def settings(self) -> Settings:
        """The live settings (read them; change them through :attr:`model`, so that what shows them follows)."""
        return self.model.settings

    # ---- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.watch = w = WatchPanel()
        w.start_button.clicked.connect(self.start)
        w.pause_button.clicked.connect(self.toggle_pause)
        w.stop_button.clicked.connect(self.stop)
        w.chat.feedback.connect(self._on_feedback)
        w.chat.correction.connect(self._on_correction)
        w.question.returnPressed.connect(self.ask_from_box)
        w.question.textChanged.connect(lambda t: t.strip() or self.hide_problem("ask"))
        w.model_combo.currentIndexChanged.connect(lambda _i: w.model_combo.currentData() and self.hide_problem("no model"))
        w.ask_button.clicked.connect(self.ask_from_box)
        w.talk_button.clicked.connect(self.push_to_talk)

        self.tabs = QTabWidget()
        self.tabs.addTab(w, "Watch")
        self.sessions_page = SessionsPage(self.sessions)
        self.tabs.addTab(self.sessions_page, "Sessions")
        self.model_page = ModelPage(self.library)
        self.tabs.addTab(self.model_page, "Models")
        self.train_page = TrainPage(self.sessions)
        self.tabs.addTab(self.train_page, "Train")
        self.tabs.currentChanged.connect(self._tab_changed)
        from app.ui.about import about_button
        from app.ui.runtime_dialog import runtime_button

        corner = QWidget()
        corner_row = QHBoxLayout(corner)
        corner_row.setContentsMargins(0, 0, 6, 0)
        corner_row.addWidget(runtime_button(self))
        corner_row.addWidget(about_button(self))
        self.tabs.setCornerWidget(corner)
        self.setCentralWidget(self.tabs)

        self.status = SessionStatus(self.statusBar())
        s = self.settings.window
        self.resize(s.width, s.height)
        if s.x >= 0 and s.y >= 0:
            self.move(s.x, s.y)

    # ---- state ---------------------------------------------------------------------------------
    def _show_state(self, state: State) -> None:
        self.state = state
        if state != State.IDLE:
            self.hide_problem("ask")  # "Start watching first" is over once it starts
        self.watch.show_state(state)
        watching = state == State.RUNNING
        self.overlay.set_capturing(watching, self.watch.source_label.text() if watching else "")
        self.status.show_state(state)
        if self.tray is not None:
            self.tray.setIcon(app_icon(recording=watching))
            self.tray.setToolTip(f"Duet — {self.status.watching_label.text()}")

    @Slot(str)
    def _on_state(self, _state: str) -> None:
        """Show the controller's state *now* (signals from two threads may arrive out of order)."""
        state, before = self.controller.state, self.state
        if state == State.PAUSED and before != State.PAUSED:
            self.player.pause()
        elif state == State.RUNNING and before == State.PAUSED:
            self.player.resume()
        elif state == State.IDLE:
            self.player.stop()
            self.status.source_status.setText("")
        self._show_state(state)

    # ---- actions -------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        if self.state != State.IDLE:
            return
        self.hide_problem()
        self.save_settings()
        s = self.settings.session
        if not self.watch.model_combo.currentData():
            self.show_problem(no_model_message(), cause="no model")
            return
        try:
            # The window watches in real time, so a slow machine stays live (skips stale frames, fewer
            # tokens per frame) and the status bar says what it traded (app/engine/cadence.py).
            config = SessionConfig(interval=s.interval, frames_per_turn=s.frames_per_turn,
                                   talkativeness=s.talkativeness, cadence="live")
        except SettingError as e:
            self.show_problem(str(e))
            return
        self.watch.chat.clear()
        self.overlay.clear()
        self.status.reset()  # the last session's step time, RTF and context are not this one's
        self.statusBar().clearMessage()
        # The Engine settings, as --n-ctx, --threads and --gpu (or --gpu-layers 0) would set them.
        backend = backend_for_gpu(s.gpu, BackendSettings(n_ctx=s.n_ctx, n_threads=s.n_threads))
        self.run_request = RunRequest(source=s.source, model=s.model, config=config, backend=backend,
                                      interactive=True)
        self.runner.start(self.run_request)

    def running_config(self) -> SessionConfig | None:
        """What the session runs with (the controller's session, else the request it was started from), not
        the controls: those may show what the next Start will use."""
        session = self.controller.session
        if session is not None:
            return session.config
        return self.run_request.config if self.run_request is not None else None

    @Slot()
    def stop(self) -> None:
        self.controller.stop()

    @Slot()
    def toggle_pause(self) -> None:
        self.controller.toggle_pause()

    def ask(self, text: str, *, spoken: bool = False) -> bool:
        """Send a question; its bubble is stamped with the moment it was typed, not the step that carries it.

        The model may be seconds behind the picture: the question rides with its next step, and the bubble
        says so until that step has run. While the model loads the question waits for the first step."""
        text = text.strip()
        if not text:
            return False
        loading = self.controller.state == State.LOADING
        at = 0.0 if loading else self.player.position if self.player.active else self.controller.stream_time
        if not self.controller.ask(text, spoken=spoken, asked_at=at):
            self.show_problem("Start watching first, then ask: the question rides with the next frames.",
                              cause="ask")
            return False
        self.watch.chat.add_question(text, at, spoken=spoken, pending=True, loading=loading)
        return True

    @Slot()
    def ask_from_box(self) -> None:
        if self.ask(self.watch.question.text()):
            self.watch.question.clear()

    @Slot()
    def focus_question(self) -> None:
        self.show_and_raise()
        self.tabs.setCurrentIndex(0)
        self.watch.question.setFocus()

    @Slot()
    def push_to_talk(self) -> None:
        self.voice.toggle()

    @Slot()
    def quit_app(self) -> None:
        """Ctrl+Q (the platform's Quit keys) and the tray's Quit: close the window as its close button does,
        then end the application's event loop, so no dialog or picker left open keeps Duet running.

        Without a running event loop (a script or a test driving the window) closing is all there is to do:
        quitting then would make the next event loop return at once."""
        if self.close() and QThread.currentThread().loopLevel() > 0:
            QApplication.quit()

    @Slot()
    def show_and_raise(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # ---- messages ------------------------------------------------------------------------------
    @Slot(str)
    def show_problem(self, text: str, cause: str = "") -> None:
        """The red banner. ``cause`` names what it is about when that can end by itself (a question asked
        before Start: "ask"; no model: "no model"), so :meth:`hide_problem` takes it away then."""
        self.last_error = text
        self.problem_cause = cause
        self.watch.show_problem(text)  # the banner; the status bar keeps its live figures (no overlap)

    def hide_problem(self, cause: str | None = None) -> None:
        """Hide the banner; with ``cause``, only when the banner is about that."""
        if cause is None or (self.problem_cause == cause and self.watch.banner.isVisible()):
            self.problem_cause = ""
            self.watch.hide_problem()

    @Slot(str)
    def _speech_unavailable(self, text: str) -> None:
        self.show_problem(text)
        self.watch.chat.add_notice(text)
        self.settings_sync.label_mute()

    # ---- worker signals ------------------------------------------------------------------------
    @Slot(str)
    def _on_loading(self, what: str) -> None:
        self.statusBar().showMessage(what)

    @Slot(str, str)
    def _on_started(self, device: str, source_name: str) -> None:
        self.device = device
        self.status.device_label.setText(f"device {device}")
        self.statusBar().clearMessage()
        path = video_file_of(self.settings.session.source)
        if path is not None and self.player.available:
            self.player.play(path)

    @Slot(object)
    def _on_frame(self, frame: Frame) -> None:
        if self.player.active:  # the player draws the film; keep it on the model's moment
            self.player.sync(frame.time)
        else:
            self.watch.show_frame(frame)

    @Slot(str)
    def _on_player_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"In-app playback unavailable ({message}); showing the sampled frames", 8000)

    @Slot(object)
    def _on_step(self, r: StepResult) -> None:
        self.last_result = r
        self.watch.chat.settle_questions(r.question, r.video_time)
        text = "" if r.silent else shown_text(r.text)  # no control characters or special tokens on screen
        if text:
            shown = self.overlay.add_reply(text, clock(r.video_time))
            self.watch.chat.add_reply(text, r.video_time, r.turn, r.frames[-1].image if r.frames else None)
            if shown:
                self.speech.say(text)
            else:
                self.controller.mark_folded(r.turn)  # a repeat on screen; the transcript keeps it
        config = self.running_config()
        self.status.show_step(r, config.interval if config is not None else 0.0)

    @Slot(object)
    def _on_gap(self, gap: Gap) -> None:
        self.watch.chat.add_notice(f"Paused for {gap.seconds:.0f} s: Duet did not watch meanwhile, and starts the next "
                             f"turn from fresh frames.")

    @Slot(object)
    def _on_health(self, event: HealthChanged) -> None:
        if event.health in (SourceHealth.LOST, SourceHealth.HIDDEN):
            self.show_problem(f"{event.source_name}: {event.detail}")
        elif self.watch.banner.isVisible() and self.watch.banner.text().startswith(f"{event.source_name}:"):
            self.hide_problem()

    @Slot(str)
    def _on_error(self, msg: str) -> None:
        self.statusBar().clearMessage()  # "Opening …" is over: the banner says what happened
        self.show_problem(msg)
        self.watch.chat.add_notice(msg)

    @Slot(str)
    def _on_finished(self, reason: str) -> None:
        self.statusBar().clearMessage()  # a stop during loading leaves no "Loading …" behind
        self.watch.chat.drop_pending("not sent: the session ended before another step")
        if reason == "ended":
            self.watch.chat.add_notice("The source ended; the session is saved in the Sessions tab.")
        self._on_state(self.controller.state)
        self.sessions_page.refresh()

    @Slot(str)
    def _on_transcribed(self, text: str) -> None:
        if not self.ask(text, spoken=True):
            self.watch.question.setText(text)

    @Slot(str)
    def _on_voice_state(self, state: str) -> None:
        self.watch.talk_button.setChecked(state == "recording")
        self.watch.talk_button.setText({"recording": "■  Listening…", "transcribing": "…  Transcribing",
                                  "downloading": "⇣  Downloading"}.get(state, "●  Talk"))

    @Slot()
    def _poll_source(self) -> None:
        src = self.controller.source
        if src is None or self.state not in (State.RUNNING, State.PAUSED):
            return
        try:
            self.status.source_status.setText(src.status)
        except Exception:  # the source is being closed on the worker thread
            return
        self.controller.check_health()  # a change arrives as a typed event (_on_health)

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.sessions_page:
            self.sessions_page.refresh()

    # ---- saving and shutdown -------------------------------------------------------------------
    def save_settings(self) -> bool:
        """Save, with where the window and the overlay are; False (and the banner says why) when the file
        could not be written."""
        m = self.model
        for key, value in zip(("x", "y", "width", "height"), (self.x(), self.y(), self.width(), self.height())):
            m.set("window", key, value)
        g = self.overlay.resting_geometry()
        for key, value in zip(("x", "y", "width", "height"), (g.x(), g.y(), g.width(), g.height())):
            m.set("overlay", key, value)
        try:
            m.save()
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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.isVisible() and not self.model_page.downloads.confirm_close(self):
            event.ignore()  # the download goes on, and so does the window
            return
        self.model_page.jobs.shutdown()  # running pulls pause; the Models page offers Resume on the next start
        if not self.save_settings() and self.isVisible() and not self.confirm_close_unsaved(self.last_error):
            event.ignore()  # the user frees some space first; the session (if any) runs on
            return
        self._poll.stop()
        self.runner.close()  # stops the session; its transcript is closed by the controller
        self.voice.close()
        self.speech.close()
        self.player.stop()
        self.overlay.close()
        if self.tray is not None:
            self.tray.hide()
        super().closeEvent(event)
