"""The trainer's PyTorch runtime in the app: its state, a progress bar while it installs, removal.

A thin shell over :class:`app.trainer.runtime.TrainerRuntime`: the install runs on a plain thread and
its progress events cross to the UI thread through a Qt signal (queued), so the window stays live
during the minutes pip takes. Closing the dialog mid-install is refused (the install would go on
unseen); quitting the app is not, and the next install resumes where it stopped.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.trainer.runtime import RuntimeSetupError, TrainerRuntime


class _Bridge(QObject):
    progress = Signal(dict)
    finished = Signal(str)  # "" on success, else the error message


class RuntimeDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, runtime: TrainerRuntime | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Training runtime")
        self.setMinimumWidth(560)
        self.runtime = runtime or TrainerRuntime()
        self.busy = False
        self._thread: threading.Thread | None = None
        self._bridge = _Bridge(self)
        self._bridge.progress.connect(self._on_progress)
        self._bridge.finished.connect(self._on_finished)

        lay = QVBoxLayout(self)
        intro = QLabel("Training uses PyTorch, which Duet installs on first use into a private folder "
                       "(the CPU build, or the CUDA build your NVIDIA driver supports). Watching and "
                       "narrating never need it.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        self.state_label.setObjectName("runtimeState")
        lay.addWidget(self.state_label)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        lay.addWidget(self.bar)
        self.step_label = QLabel("")
        self.step_label.setWordWrap(True)
        lay.addWidget(self.step_label)
        row = QHBoxLayout()
        self.install_button = QPushButton()
        self.install_button.setObjectName("primary")
        self.install_button.clicked.connect(self.install)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Delete the runtime folder (it can be installed again later)")
        self.remove_button.clicked.connect(self.remove)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        row.addWidget(self.install_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        row.addWidget(self.close_button)
        lay.addLayout(row)
        self.refresh()

    def refresh(self) -> None:
        st = self.runtime.status()
        self.state_label.setText(st.describe())
        self.install_button.setText({"absent": "Install", "ready": "Installed"}.get(st.state, "Repair"))
        self.install_button.setEnabled(not self.busy and st.state != "ready")
        self.remove_button.setEnabled(not self.busy and st.state != "absent")
        self.close_button.setEnabled(not self.busy)
        if not self.busy:
            self.bar.setValue(1000 if st.ready else 0)

    def install(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.refresh()
        self.state_label.setText("installing: a few minutes (about 1.5 GB for the CPU build); if Duet is closed "
                                 "meanwhile, the next install resumes")
        self.step_label.setText("starting …")

        def work() -> None:
            try:
                self.runtime.install(self._bridge.progress.emit)
                self._bridge.finished.emit("")
            except RuntimeSetupError as e:
                self._bridge.finished.emit(str(e))
            except Exception as e:  # noqa: BLE001 - shown to the user, never a silent thread death
                self._bridge.finished.emit(f"{type(e).__name__}: {e}")

        self._thread = threading.Thread(target=work, name="duet-runtime-install", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        if self.busy:
            return
        try:
            self.runtime.remove()
        except (RuntimeSetupError, OSError) as e:  # another Duet is installing it; a file in use
            self.step_label.setText("not removed: " + str(e).splitlines()[0])
        else:
            self.step_label.setText("removed")
        self.refresh()

    def _on_progress(self, event: dict) -> None:
        self.bar.setValue(int(event.get("fraction", 0) * 1000))
        self.step_label.setText(f"{event.get('phase', '')}: {event.get('message', '')}")

    def _on_finished(self, error: str) -> None:
        self.busy = False
        self.refresh()
        if error:
            self.step_label.setText("stopped: " + error.splitlines()[0])
            QMessageBox.warning(self, "Training runtime", error[:2000])

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's name
        if self.busy:
            event.ignore()
            return
        super().closeEvent(event)


def runtime_button(parent: QWidget) -> QToolButton:
    """A small "Training runtime" button for a corner of the main window."""
    b = QToolButton(parent)
    b.setText("Training runtime")
    b.setObjectName("runtimeButton")
    b.setToolTip("Install, repair or remove the PyTorch that training uses")
    b.setAutoRaise(True)
    b.clicked.connect(lambda: RuntimeDialog(parent).exec())
    return b
