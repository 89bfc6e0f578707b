"""The trainer's PyTorch runtime in the app: its state, a progress bar while it installs, removal.

A thin shell over :class:`app.trainer.runtime.TrainerRuntime`: the install is a
:class:`~app.ui.background.BackgroundOp` whose progress events reach the bar on the UI thread, so the
window stays live during the minutes pip takes. Closing the dialog mid-install is refused (the install
would go on unseen); quitting the app is not, and the next install resumes where it stopped.

A source install with the ``train`` extra already trains on its own interpreter
(:func:`app.trainer.own_trainer.own_trainer`): then the dialog says so and offers no install, since
the runtime would be a 1.5 GB second copy that nothing uses.
"""

from __future__ import annotations

import logging

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

from app.core.errors import DuetError, describe
from app.trainer.own_trainer import TRAINER_IMPORTS, own_trainer
from app.trainer.runtime import RuntimeSetupError, TrainerRuntime
from app.ui.background import BackgroundOp

log = logging.getLogger("duet.ui.runtime")


class RuntimeDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, runtime: TrainerRuntime | None = None, *,
                 needs: tuple[str, ...] = TRAINER_IMPORTS) -> None:
        """``needs``: the packages that make this interpreter able to train (tests name one that is absent
        to see the installed app's dialog from a source checkout that has PyTorch)."""
        super().__init__(parent)
        self.setWindowTitle("Training runtime")
        self.setMinimumWidth(560)
        self.runtime = runtime or TrainerRuntime()
        self.own = own_trainer(needs)
        self.busy = False

        lay = QVBoxLayout(self)
        self.intro = QLabel("Training uses PyTorch, which Duet installs on first use into a private folder "
                            "(the CPU build, or the CUDA build your NVIDIA driver supports). Watching and "
                            "narrating never need it.")
        self.intro.setWordWrap(True)
        lay.addWidget(self.intro)
        said = self.own.describe()
        self.own_label = QLabel(said[:1].upper() + said[1:])
        self.own_label.setWordWrap(True)
        self.own_label.setObjectName("runtimeOwn")
        self.own_label.setVisible(bool(self.own.describe()))
        lay.addWidget(self.own_label)
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
        if self.own.usable:  # nothing to install: this interpreter trains (a private runtime left over stays removable)
            self.intro.setText("Training uses PyTorch. Watching and narrating never need it.")
            self.install_button.hide()
            self.bar.hide()
            self.step_label.hide()  # until a removal of a leftover runtime has something to say
        self.refresh()

    def refresh(self) -> None:
        st = self.runtime.status()
        if self.own.usable:
            self.state_label.setText("" if st.state == "absent" else
                                     f"a private runtime is also installed, unused while this install has "
                                     f"PyTorch: {st.describe()}")
        else:
            self.state_label.setText(st.describe())
        self.state_label.setVisible(bool(self.state_label.text()))
        self.install_button.setText({"absent": "Install", "ready": "Installed"}.get(st.state, "Repair"))
        self.install_button.setEnabled(not self.busy and st.state != "ready" and not self.own.usable)
        self.remove_button.setEnabled(not self.busy and st.state != "absent")
        self.close_button.setEnabled(not self.busy)
        if not self.busy:
            self.bar.setValue(1000 if st.ready else 0)

    def install(self) -> None:
        if self.busy or self.own.usable:
            return
        self.busy = True
        self.refresh()
        self.state_label.setText("installing: a few minutes (about 1.5 GB for the CPU build); if Duet is closed "
                                 "meanwhile, the next install resumes")
        self.step_label.setText("starting …")
        runtime = self.runtime
        BackgroundOp(self, lambda report: runtime.install(report), progress=self._on_progress,
                     success=lambda _status: self._on_finished(""),
                     failure=self._failed,
                     name="duet-runtime-install").run()

    def remove(self) -> None:
        if self.busy:
            return
        try:
            self.runtime.remove()
        except (RuntimeSetupError, OSError) as e:  # another Duet is installing it; a file in use
            self.step_label.setText("not removed: " + str(e).splitlines()[0])
        else:
            self.step_label.setText("removed")
        self.step_label.show()
        self.refresh()

    def _on_progress(self, event: dict[str, object]) -> None:
        self.bar.setValue(int(float(event.get("fraction", 0) or 0) * 1000))  # type: ignore[arg-type]
        self.step_label.setText(f"{event.get('phase', '')}: {event.get('message', '')}")

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, (DuetError, OSError)):  # a bug: its traceback goes to the log, its name to the user
            log.error("runtime install failed", exc_info=(type(exc), exc, exc.__traceback__))
        self._on_finished(describe(exc))

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
