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
from PySide6.QtWidgets import QApplication, QHBoxLayout, QMainWindow, QTabWidget, QToolButton, QWidget

from app.capture.base import SourceHealth
from app.core.config import SessionConfig
from app.core.errors import SettingError, describe_write_failure
from app.core.feedback import FeedbackError
from app.core.sessions import SessionStore, add_feedback
from app.core.settings import Settings, SettingsStore
from app.core.timefmt import clock
from app.core.types import Frame, StepResult
from app.engine.controller import Gap, HealthChanged, State
from app.modelhub.library import ModelLibrary
from app.ui.capture_exclusion import CaptureExclusion
from app.ui.model_choice import no_model_message
from app.ui.model_page import ModelPage
from app.ui.overlay import Overlay
from app.ui.pace import pace_text
from app.ui.reply_text import shown_text
from app.ui.sessions_page import SessionsPage
from app.ui.speech_bridge import SpeechBridge, VoiceInput
from app.ui.style import STYLE
from app.ui.train_page import TrainPage
from app.ui.tray import app_icon, make_tray
from app.ui.video_preview import PlayerPreview
from app.ui.watch_panel import SessionStatus, WatchPanel, video_file_of
from app.ui.window_settings import WindowSettingsMixin
from app.ui.worker import (
    BackendFactory,
    RunRequest,
    SessionThread,
    SessionWorker,
    SourceFactory,
    default_backend,
)

log = logging.getLogger("duet.ui")


class MainWindow(WindowSettingsMixin, QMainWindow):
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
        self.last_result: StepResult | None = None
        self.state = State.IDLE  # mirrors the controller's state, updated as its signal arrives
        self.last_error = ""
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
        problems = settings_store.problems  # out of range or of the wrong type: replaced by defaults, said here
        if problems:
            shown = "; ".join(problems[:3]) + ("; …" if len(problems) > 3 else "")
            self.show_problem(f"Some settings in {settings_store.path} were not usable and their defaults "
                              f"are used: {shown}.")
        self.library.entries()  # reading it sets a damaged index aside, so it is reported here, once
        problem = self.library.root_problem()
        if problem:  # not an empty library: a library that cannot exist where it is looked for
            self.show_problem(f"{problem[0].upper()}{problem[1:]}.")
        if self.library.recovered_from is not None:
            self.show_problem(f"The model library index was damaged; it was set aside as "
                              f"{self.library.recovered_from.name}. The model files are untouched: "
                              "import them again from the Models page.")
        self._show_state(State.IDLE)
        self.speech.check_output()  # a missing player or sound device is said now, not discovered later
        self._label_mute(self.settings.speech.muted)
        if not self.model_combo.currentData():
            self.show_problem(no_model_message())  # the more urgent message keeps the banner

    # ---- layout --------------------------------------------------------------------------------
    def _build(self) -> None:
        self.watch = w = WatchPanel()
        # The widgets tests and shortcuts reach through the window.
        for name in ("banner", "source_label", "source_button", "preview", "start_button", "pause_button",
                     "stop_button", "model_combo", "interval_spin", "frames_spin", "talk_slider", "talk_value",
                     "mute_button", "overlay_button", "pace_label", "chat", "question", "ask_button", "talk_button"):
            setattr(self, name, getattr(w, name))
        w.source_button.clicked.connect(self.choose_source)
        w.start_button.clicked.connect(self.start)
        w.pause_button.clicked.connect(self.toggle_pause)
        w.stop_button.clicked.connect(self.stop)
        w.talk_slider.valueChanged.connect(self._on_talkativeness)
        w.mute_button.toggled.connect(self.set_muted)
        w.overlay_button.toggled.connect(self.set_overlay_visible)
        w.settings_button.clicked.connect(self.open_settings)
        w.chat.feedback.connect(self._on_feedback)
        w.chat.correction.connect(self._on_correction)
        w.model_combo.activated.connect(lambda _i: self.fit_pace(self.model_combo.currentData() or ""))
        w.question.returnPressed.connect(self.ask_from_box)
        w.ask_button.clicked.connect(self.ask_from_box)
        w.talk_button.clicked.connect(self.push_to_talk)

        self.tabs = QTabWidget()
        self.tabs.addTab(w, "Watch")
        self.sessions_page = SessionsPage(self.sessions)
        self.tabs.addTab(self.sessions_page, "Sessions")
        self.model_page = ModelPage(self.library)
        self.model_page.removed.connect(self._model_removed)
        self.model_page.changed.connect(self._refresh_models)
        self.model_page.default_chosen.connect(
            lambda name: (self.set_model(name), self.fit_pace(name), self.save_settings()))
        self.tabs.addTab(self.model_page, "Models")
        self.train_page = TrainPage(self.sessions)
        self.train_page.use_model.connect(
            lambda name: (self.model_page.refresh(), self.set_model(name), self.fit_pace(name)))
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
        self._refresh_models()

        self.status = SessionStatus(self.statusBar())
        for name in ("watching_label", "latency_label", "rtf_label", "context_label", "device_label", "source_status"):
            setattr(self, name, getattr(self.status, name))
        s = self.settings.window
        self.resize(s.width, s.height)
        if s.x >= 0 and s.y >= 0:
            self.move(s.x, s.y)

    # ---- state ---------------------------------------------------------------------------------
    def _show_state(self, state: State) -> None:
        self.state = state
        self.watch.show_state(state)
        watching = state == State.RUNNING
        self.overlay.set_capturing(watching, self.source_label.text() if watching else "")
        self.status.show_state(state)
        if self.tray is not None:
            self.tray.setIcon(app_icon(recording=watching))
            self.tray.setToolTip(f"Duet — {self.watching_label.text()}")

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
            self.source_status.setText("")
        self._show_state(state)

    # ---- actions -------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        if self.state != State.IDLE:
            return
        self.hide_problem()
        self._collect_settings()
        self.save_settings()
        s = self.settings.session
        if not self.model_combo.currentData():
            self.show_problem(no_model_message())
            return
        try:
            # The window watches in real time, so a slow machine stays live (skips stale frames, fewer
            # tokens per frame) and the status bar says what it traded (app/engine/cadence.py).
            config = SessionConfig(interval=s.interval, frames_per_turn=s.frames_per_turn,
                                   talkativeness=s.talkativeness, cadence="live")
        except SettingError as e:
            self.show_problem(str(e))
            return
        self.chat.clear()
        self.overlay.clear()
        self.status.reset()  # the last session's step time, RTF and context are not this one's
        self.statusBar().clearMessage()
        self.runner.start(RunRequest(source=s.source, model=s.model, config=config, interactive=True))

    @Slot()
    def stop(self) -> None:
        self.controller.stop()

    @Slot()
    def toggle_pause(self) -> None:
        self.controller.toggle_pause()

    def ask(self, text: str, *, spoken: bool = False) -> bool:
        text = text.strip()
        if not text:
            return False
        if not self.controller.ask(text, spoken=spoken):
            self.show_problem("Start watching first, then ask: the question rides with the next frames.")
            return False
        self.chat.add_question(text, spoken=spoken, pending=True)  # stamped by the turn that carries it
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
    def show_problem(self, text: str) -> None:
        self.last_error = text
        self.watch.show_problem(text)  # the banner; the status bar keeps its live figures (no overlap)

    def hide_problem(self) -> None:
        self.watch.hide_problem()

    @Slot(str)
    def _speech_unavailable(self, text: str) -> None:
        self.show_problem(text)
        self.chat.add_notice(text)
        self._label_mute(self.settings.speech.muted)

    # ---- worker signals ------------------------------------------------------------------------
    @Slot(str)
    def _on_loading(self, what: str) -> None:
        self.statusBar().showMessage(what)

    @Slot(str, str)
    def _on_started(self, device: str, source_name: str) -> None:
        self.device = device
        self.device_label.setText(f"device {device}")
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
        self.chat.settle_questions(r.question, r.video_time)
        text = "" if r.silent else shown_text(r.text)  # no control characters or special tokens on screen
        if text:
            shown = self.overlay.add_reply(text, clock(r.video_time))
            self.chat.add_reply(text, r.video_time, r.turn, r.frames[-1].image if r.frames else None)
            if shown:
                self.speech.say(text)
            else:
                self.controller.mark_folded(r.turn)  # a repeat on screen; the transcript keeps it
        self.status.show_step(r, self.interval_spin.value())

    @Slot(object)
    def _on_gap(self, gap: Gap) -> None:
        self.chat.add_notice(f"Paused for {gap.seconds:.0f} s: Duet did not watch meanwhile, and starts the next "
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
        self.chat.add_notice(msg)

    @Slot(str)
    def _on_finished(self, reason: str) -> None:
        self.statusBar().clearMessage()  # a stop during loading leaves no "Loading …" behind
        if reason == "ended":
            self.chat.add_notice("The source ended; the session is saved in the Sessions tab.")
        self._on_state(self.controller.state)
        self.sessions_page.refresh()

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
        self.record_mark(turn, kind, on)

    @Slot(int, str)
    def _on_correction(self, turn: int, text: str) -> None:
        self.record_mark(turn, "wrong", True, text)  # a "wrong" mark carrying the correction

    def record_mark(self, turn: int, kind: str, on: bool, text: str = "") -> bool:
        """Write a mark from the Watch chat; False (and the button goes back and says why) when it cannot be.

        While the session runs, its transcript takes the mark. Once it has ended (the clip ran out, Stop)
        the chat still shows its replies, and a mark on them goes to the finished session's file, as the
        Sessions page writes it: a button that lights up must mean the mark is on disk.
        """
        if self.controller.add_feedback(turn, kind, on, text):
            problem = None
        else:
            problem = self._mark_finished_session(turn, kind, on, text)
        for button in self._mark_buttons(turn, kind):
            plain = button.property("plain_tip")
            if problem is None and plain is not None:  # saved now: the "Not saved" of an earlier try goes
                button.setToolTip(plain)
        if problem is None:
            return True
        self._refuse_mark(turn, kind, on, problem)
        return False

    def _mark_buttons(self, turn: int, kind: str) -> list[QToolButton]:
        """The chat's buttons of ``kind`` on the bubble(s) showing the reply of ``turn``."""
        return [b for bubble in self.chat.replies() if turn in bubble.turns
                for b in [bubble.buttons.get(kind)] if b is not None]

    def _mark_finished_session(self, turn: int, kind: str, on: bool, text: str) -> str | None:
        """Append the mark to the latest session's file; None when written, else why it was not."""
        sid = self.controller.last_session_id
        if sid is None:
            return "This session is not being saved (see the message above), so marks on it cannot be kept."
        try:
            add_feedback(self.sessions.find(sid), turn, kind, on, text)
        except FileNotFoundError:
            return (f"The saved session {sid} is gone (deleted, or its folder moved), so this mark could not be "
                    "kept.")
        except FeedbackError as e:
            return f"This mark could not be kept: {e}."
        except OSError as e:
            return describe_write_failure(e, "Your mark could not be saved",
                                          "the session's log is as it was; mark the reply again once there is room")
        return None

    def _refuse_mark(self, turn: int, kind: str, on: bool, why: str) -> None:
        """The button shows what is saved, not what was tried, and its tooltip and the banner say why."""
        self.show_problem(why)
        for button in self._mark_buttons(turn, kind):
            if button.property("plain_tip") is None:
                button.setProperty("plain_tip", button.toolTip())
            button.blockSignals(True)
            button.setChecked(not on)
            button.blockSignals(False)
            button.setToolTip(f"Not saved: {why}")

    @Slot(str)
    def _model_removed(self, name: str) -> None:
        """The user deleted a model on the Models page: never keep offering it (Start would fail on its files)."""
        was = self.model_combo.currentData()
        if getattr(self, "_explicit_model", "") == name:
            self._explicit_model = ""
        if self.settings.session.model == name:
            self.settings.session.model = ""
        if was == name:
            self.model_combo.setCurrentIndex(-1)  # pick again among what is left
        self._refresh_models()
        now = self.model_combo.currentData()
        if was != name:
            return
        if now:
            self.fit_pace(now)
            self.model_page.library_message.setText(
                f"Deleted {name}. The Watch tab now uses {self.model_combo.currentText()}.")
        else:
            self.model_page.library_message.setText(f"Deleted {name}. No model is left: download or import one "
                                                    "below.")
            self.show_problem(no_model_message())
        self.save_settings()

    def _update_pace(self, *_: object) -> None:
        self.pace_label.setText(pace_text(self.interval_spin.value(), self.frames_spin.value()))

    def _on_talkativeness(self, value: int) -> None:
        self.controller.set_talkativeness(float(value))

    @Slot()
    def _poll_source(self) -> None:
        src = self.controller.source
        if src is None or self.state not in (State.RUNNING, State.PAUSED):
            return
        try:
            self.source_status.setText(src.status)
        except Exception:  # the source is being closed on the worker thread
            return
        self.controller.check_health()  # a change arrives as a typed event (_on_health)

    def _tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is self.sessions_page:
            self.sessions_page.refresh()

    # ---- shutdown ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
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
