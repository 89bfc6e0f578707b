"""The GUI's one way to follow child-process jobs: model downloads and training runs.

Both kinds are processes the app starts and may leave running: a pull
(:class:`app.modelhub.jobs.PullProcess`, reported by a reader thread into its ``status``) outlives the
Models page, a training run (:class:`app.trainer.jobs.JobProcess`, reported through its
``progress.jsonl``) outlives the window. What a page needs from either is the same, so it lives here once:
look at the jobs every few hundred milliseconds while one of them is live, once more after the last one
stops (so its final state is shown, not the one before), and not at all while nothing runs.

The watcher does not read the jobs itself: its ``tick`` signal asks the page to (each core API has its own
reading: a pull's status, a training job's new events). Liveness is decided before ``tick`` is emitted,
so the tick that finds the last job ended still reads everything it wrote before it exited.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

from PySide6.QtCore import QObject, QTimer, Signal


class ChildJob(Protocol):
    """What both core job APIs share: a process that may still be running."""

    def running(self) -> bool: ...


class JobWatcher(QObject):
    """Polls watched jobs on the GUI thread with one QTimer, running only while a job is live.

    ``live`` says whether a job still needs looking at; by default its process runs. A pull counts as
    live until its reader thread has recorded how it ended (``status.state`` leaves "running"), which
    can be a moment after its process exited.
    """

    tick = Signal()  # look at the jobs now (the page reads and shows them)

    def __init__(self, parent: QObject | None = None, *, interval_ms: int = 300,
                 live: Callable[[Any], bool] | None = None) -> None:
        super().__init__(parent)
        self.jobs: dict[Hashable, ChildJob] = {}
        self._live = live or (lambda job: job.running())
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def active(self) -> bool:
        """True while the timer runs (some watched job was live at the last look)."""
        return self._timer.isActive()

    def watch(self, key: Hashable, job: ChildJob) -> None:
        """Follow ``job`` under ``key`` (replacing the job watched there before) and look at once."""
        self.jobs[key] = job
        self.poll()

    def poll(self) -> None:
        """One look: decide whether any job is live, then ``tick``; the timer runs while one is."""
        live = any(self._live(job) for job in self.jobs.values())
        self.tick.emit()
        if live and not self._timer.isActive():
            self._timer.start()
        elif not live and self._timer.isActive():
            self._timer.stop()
