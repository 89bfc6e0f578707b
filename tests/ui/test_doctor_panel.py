""""Check this computer" outlives its dialog: closing it while the checks run leaves nothing to crash or log."""

from __future__ import annotations

import logging
import threading

import pytest
import shiboken6
from PySide6.QtWidgets import QWidget

from app.doctor import Check
from app.ui import background
from app.ui.doctor_panel import DoctorPanel


def test_a_panel_deleted_while_checking_ignores_the_late_result(qtbot, caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def slow(*, quick: bool) -> list[Check]:  # stands in for run_checks: returns only when the test says so
        release.wait(30)
        return [Check("CPU", True, "fine")]

    host = QWidget()
    panel = DoctorPanel(host, run=slow)
    panel.start()
    assert not panel.button.isEnabled() and background._alive
    host.deleteLater()
    qtbot.waitUntil(lambda: not shiboken6.isValid(panel))
    with caplog.at_level(logging.WARNING):
        release.set()
        qtbot.waitUntil(lambda: not background._alive, timeout=10_000)  # its handlers ran, on the GUI thread
    assert not caplog.records
