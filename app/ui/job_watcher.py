"""The GUI's one way to follow child-process jobs: model downloads and training runs.

Both are :class:`app.core.child_job.ChildJob` processes the app starts and may leave running: a pull
(:class:`app.modelhub.jobs.PullProcess`) outlives the Models page, a training run
(:class:`app.trainer.jobs.JobProcess`) outlives the window. Both report through their folder's
``progress.jsonl`` and are read on the GUI thread, so what a page needs from either is the same and lives
here once: look at the jobs every few hundred milliseconds while one of them runs, once more after the last
one stops (so its final state is shown, not the one before), and not at all while nothing runs.

The watcher does not read the jobs itself: its ``tick`` signal asks the page to (a pull's ``update()`` turns
its events into the row's status, the Train page draws a training job's ``read_events()``). Liveness is
decided before ``tick`` is emitted, so the tick that finds the last job ended still reads everything it wrote
before it exited.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from PySide6.QtCore import QObject, QTimer, Signal


class Watched(Protocol):
    """What the watcher needs of a job (:class:`app.core.child_job.ChildJob` and the pulls that hold one)."""

    def running(self) -> bool: ...


class JobWatcher(QObject):
    """Polls watched jobs on the GUI thread with one QTimer, running only while a job's process runs."""

    tick = Signal()  # look at the jobs now (the page reads and shows them)

    def __init__(self, parent: QObject | None = None, *, interval_ms: int = 300) -> None:
        super().__init__(parent)
        self.jobs: dict[Hashable, Watched] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def active(self) -> bool:
        """True while the timer runs (some watched job was live at the last look)."""
        return self._timer.isActive()

    def watch(self, key: Hashable, job: Watched) -> None:
        """Follow ``job`` under ``key`` (replacing the job watched there before) and look at once."""
        self.jobs[key] = job
        self.poll()

    def poll(self) -> None:
        """One look: decide whether any job runs, then ``tick``; the timer runs while one does."""
        live = any(job.running() for job in self.jobs.values())
        self.tick.emit()
        if live and not self._timer.isActive():
            self._timer.start()
        elif not live and self._timer.isActive():
            self._timer.stop()
