"""The Watch tab: source, preview, start / pause / stop, model, pace, the conversation and the ask box.

Layout and presentation only. What the buttons do is wired by :class:`~app.ui.main_window.MainWindow`
to the session controller; the pace controls are bound to their settings by
:class:`~app.ui.window_settings.SettingsSync`, which gives them the ranges
:class:`~app.core.config.SessionConfig` declares, so the GUI accepts exactly what a session accepts.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from app.capture.parse import SourceSpecError, parse_spec
from app.core.types import Frame, StepResult
from app.engine.controller import State
from app.ui.chat_view import ChatView
from app.ui.images import rgb_to_pixmap
from app.ui.pace import pace_text


def video_file_of(spec: str) -> Path | None:
    """The file a source spec names, when it is a video file (the in-app player can then show it)."""
    try:
        parsed = parse_spec(spec)
    except SourceSpecError:
        return None
    return Path(parsed.path) if parsed.kind == "file" else None


def section(text: str) -> QLabel:
    label = QLabel(text.upper())
    label.setObjectName("sectionTitle")
    return label


class WatchPanel(QWidget):
    """See the module docstring. Widgets are public attributes; the window connects them."""

    def __init__(self) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 12, 14, 8)
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        outer.addWidget(self.banner)
        split = QSplitter()
        split.addWidget(self._side())
        split.addWidget(self._conversation())
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([480, 760])
        outer.addWidget(split, 1)

    # ---- layout --------------------------------------------------------------------------------
    def _side(self) -> QWidget:
        side = QFrame()
        side.setObjectName("sidePanel")
        side.setMinimumWidth(380)
        col = QVBoxLayout(side)
        col.setContentsMargins(16, 14, 16, 14)
        col.setSpacing(8)
        col.addWidget(section("Watching"))
        src_row = QHBoxLayout()
        self.source_label = QLabel()
        self.source_label.setObjectName("sourceName")
        self.source_button = QPushButton("Choose…")
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
        self.pause_button = QPushButton("❚❚  Pause")
        self.stop_button = QPushButton("■  Stop")
        self.stop_button.setObjectName("danger")
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        col.addLayout(buttons)

        col.addWidget(section("Model"))
        self.model_combo = QComboBox()
        col.addWidget(self.model_combo)
        col.addWidget(section("Pace"))
        col.addLayout(self._pace())

        tools = QHBoxLayout()
        self.mute_button = QPushButton("Voice on")
        self.mute_button.setCheckable(True)
        self.overlay_button = QPushButton("Overlay")
        self.overlay_button.setCheckable(True)
        self.settings_button = QPushButton("Settings…")
        for b in (self.mute_button, self.overlay_button, self.settings_button):
            tools.addWidget(b)
        col.addLayout(tools)
        return side

    def _pace(self) -> QGridLayout:
        grid = QGridLayout()
        self.interval_spin = QDoubleSpinBox()  # ranges and tooltips: from the settings they are bound to
        self.interval_spin.setSingleStep(0.25)
        self.interval_spin.setSuffix(" s")
        self.frames_spin = QSpinBox()
        self.talk_slider = QSlider(Qt.Orientation.Horizontal)
        self.talk_value = QLabel(f"{self.talk_slider.value():+d}")
        self.talk_slider.valueChanged.connect(lambda v: self.talk_value.setText(f"{v:+d}"))
        self.pace_label = QLabel()
        self.pace_label.setObjectName("hint")
        self.pace_label.setWordWrap(True)
        self.interval_spin.valueChanged.connect(self._update_cadence)
        self.frames_spin.valueChanged.connect(self._update_cadence)
        self._update_cadence()
        grid.addWidget(QLabel("Every"), 0, 0)
        grid.addWidget(self.interval_spin, 0, 1)
        grid.addWidget(QLabel("Frames per turn"), 1, 0)
        grid.addWidget(self.frames_spin, 1, 1)
        grid.addWidget(self.pace_label, 2, 0, 1, 2)
        talk_row = QHBoxLayout()
        talk_row.addWidget(QLabel("Quiet"))
        talk_row.addWidget(self.talk_slider, 1)
        talk_row.addWidget(QLabel("Chatty"))
        talk_row.addWidget(self.talk_value)
        grid.addLayout(talk_row, 3, 0, 1, 2)
        return grid

    def _conversation(self) -> QWidget:
        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.setContentsMargins(8, 0, 0, 0)
        rcol.addWidget(section("Conversation"))
        self.chat = ChatView(corrections=True)
        rcol.addWidget(self.chat, 1)
        ask_row = QHBoxLayout()
        self.question = QLineEdit()
        self.question.setPlaceholderText("Ask about what Duet sees…")
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("primary")
        self.talk_button = QPushButton("●  Talk")
        self.talk_button.setObjectName("talk")
        self.talk_button.setCheckable(True)
        ask_row.addWidget(self.question, 1)
        ask_row.addWidget(self.ask_button)
        ask_row.addWidget(self.talk_button)
        rcol.addLayout(ask_row)
        return right

    # ---- presentation --------------------------------------------------------------------------
    def _update_cadence(self) -> None:
        self.pace_label.setText(pace_text(self.interval_spin.value(), self.frames_spin.value()))

    def show_state(self, state: State) -> None:
        idle = state == State.IDLE
        self.start_button.setEnabled(idle)
        self.pause_button.setEnabled(state in (State.RUNNING, State.PAUSED))
        self.stop_button.setEnabled(state in (State.LOADING, State.RUNNING, State.PAUSED))
        for w in (self.source_button, self.model_combo, self.interval_spin, self.frames_spin):
            w.setEnabled(idle)
        self.pause_button.setText("▶  Resume" if state == State.PAUSED else "❚❚  Pause")

    def show_frame(self, frame: Frame) -> None:
        """A sampled frame in the preview (when no in-app player shows the film)."""
        size = self.preview.size()
        self.preview.setPixmap(rgb_to_pixmap(frame.image, size.width() - 4, size.height() - 4))

    @Slot(QImage)
    def show_picture(self, image: QImage) -> None:
        size = self.preview.size()
        self.preview.setPixmap(QPixmap.fromImage(image).scaled(
            size.width() - 4, size.height() - 4, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation))

    def show_problem(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.show()

    def hide_problem(self) -> None:
        self.banner.hide()


class SessionStatus:
    """The status bar's session figures: state, step time, real-time factor, context fill, device."""

    def __init__(self, bar: QStatusBar) -> None:
        self.watching_label = QLabel()
        self.watching_label.setObjectName("watching")
        self.latency_label = QLabel("step —")
        self.rtf_label = QLabel("RTF —")
        self.context_label = QLabel("context —")
        self.device_label = QLabel("device —")
        self.source_status = QLabel("")
        for label in (self.watching_label, self.source_status):
            bar.addWidget(label)
        for label in (self.latency_label, self.rtf_label, self.context_label, self.device_label):
            bar.addPermanentWidget(label)

    def reset(self) -> None:
        """No figures yet: a new session shows none of the last one's until its first step."""
        self.latency_label.setText("step —")
        self.latency_label.setToolTip("")
        self.rtf_label.setText("RTF —")
        self.context_label.setText("context —")
        self.device_label.setText("device —")

    def show_state(self, state: State) -> None:
        self.watching_label.setText({State.RUNNING: "● Watching", State.PAUSED: "❚❚ Paused",
                                     State.LOADING: "… Starting", State.STOPPING: "… Stopping"}.get(state, "○ Idle"))

    def show_step(self, r: StepResult, interval: float) -> None:
        video_s = max(1e-6, len(r.frames) * (interval or 1.0))
        self.latency_label.setText(f"step {r.timings.total_ms:.0f} ms")
        self.latency_label.setToolTip(r.timings.describe())  # vision encoder / text model's pass / decode
        if r.cadence is not None:  # what the cadence policy chose when the machine is slower than the video
            self.rtf_label.setText(f"RTF {r.cadence.realtime_factor:.2f}"
                                   + (f" · {r.cadence.describe()}" if r.cadence.behind else ""))
        else:
            self.rtf_label.setText(f"RTF {r.timings.total_ms / 1000 / video_s:.2f}")
        fill = 100 * r.kv_cells / r.n_ctx if r.n_ctx else 0
        self.context_label.setText(f"context {r.kv_cells}/{r.n_ctx} ({fill:.0f}%)")

