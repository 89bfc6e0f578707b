""""Check this computer": ``duet doctor``'s checks in the About dialog and the first-run wizard.

A thin shell over :func:`app.doctor.run_checks`: a button, and the checks' lines as ``duet doctor``
prints them, in a read-only text box a person can copy into a bug report. The checks take seconds (a
child process loads llama.cpp and runs the demo model once), so they run off the GUI thread through
:class:`~app.ui.background.BackgroundOp`; the button is disabled meanwhile.

The dialog holding the panel may be closed and deleted while the checks still run: the handlers then
find the panel gone and do nothing (the child process ends by itself, within the probe's timeout).
"""

from __future__ import annotations

from collections.abc import Callable

import shiboken6
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

from app.core.errors import describe
from app.doctor import Check, format_check, run_checks
from app.doctor.checks import failed
from app.ui.background import BackgroundOp

RUNNING = "Checking… (a separate process loads llama.cpp and runs the demo model once; a few seconds)"


class DoctorPanel(QWidget):
    """The button and the results. ``finished`` carries the checks (for callers and tests)."""

    finished = Signal(list)

    def __init__(self, parent: QWidget | None = None, *, quick: bool = False,
                 run: Callable[..., list[Check]] = run_checks) -> None:
        super().__init__(parent)
        self.quick = quick
        self._run = run
        self.checks: list[Check] | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.button = QPushButton("Check this computer")
        self.button.setObjectName("doctorButton")
        self.button.setToolTip("CPU, GPU, llama.cpp and the demo model, sound, camera and screen capture "
                               "(the same checks as `duet doctor`)")
        self.button.clicked.connect(self.start)
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)
        row.addWidget(self.button)
        row.addWidget(self.summary, 1)
        lay.addLayout(row)
        self.results = QTextBrowser()
        self.results.setObjectName("doctorResults")
        self.results.setOpenLinks(False)
        self.results.setMinimumHeight(150)
        self.results.hide()
        lay.addWidget(self.results)

    def start(self) -> None:
        """Run the checks in the background (a second click while they run does nothing)."""
        if not self.button.isEnabled():
            return
        self.button.setEnabled(False)
        self.summary.setText(RUNNING)
        quick, run = self.quick, self._run
        BackgroundOp(self, lambda: run(quick=quick), success=self._show, failure=self._failed,
                     finally_=self._done, name="duet-doctor").run()

    def _alive(self) -> bool:
        return shiboken6.isValid(self) and shiboken6.isValid(self.results)

    def _show(self, checks: list[Check]) -> None:
        if not self._alive():
            return
        self.checks = checks
        self.results.setPlainText("\n".join(line for c in checks for line in format_check(c)))
        self.results.show()
        problems = sum(c.ok is False for c in checks)
        self.summary.setText(f"{problems} problem(s) found: each comes with its fix below." if failed(checks)
                             else "No problems found.")
        self.finished.emit(checks)

    def _failed(self, exc: BaseException) -> None:
        if self._alive():  # run_checks never raises; this is for a bug on the way
            self.summary.setText(f"The check could not run: {describe(exc)}")

    def _done(self) -> None:
        if self._alive():
            self.button.setEnabled(True)
            self.button.setText("Check again")
