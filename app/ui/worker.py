"""The Qt side of a session: one long-lived QThread runs :class:`~app.engine.controller.SessionController`.

All session logic (states, pause, transcript, source health) lives in the Qt-free controller; this
module only moves it onto a thread and turns its typed events into queued signals carrying plain
Python objects. The GUI thread never touches the backend; control goes through the controller's
thread-safe methods (``ask``, ``pause``, ``resume``, ``stop``).

Shutdown never frees a backend that a step may still be using: :meth:`SessionThread.close` asks
the controller to release it, which happens at once when idle and otherwise when the running
session ends (on the worker thread, even if the wait for it timed out).
"""

from __future__ import annotations

import logging
import weakref

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.core.sessions import SessionStore
from app.engine import events
from app.engine.controller import SessionController
from app.engine.factory import BackendFactory, RunRequest, SourceFactory, default_backend

log = logging.getLogger("duet.ui.worker")

__all__ = ["BackendFactory", "RunRequest", "SessionThread", "SessionWorker", "SourceFactory", "default_backend"]


class SessionWorker(QObject):
    """Runs sessions on its thread. Create it, ``moveToThread``, then emit ``start_requested``."""

    start_requested = Signal(object)  # RunRequest, queued onto the worker thread
    state_changed = Signal(str)  # a State value
    loading = Signal(str)  # what is being loaded
    started = Signal(str, str)  # device, source name
    frame = Signal(object)  # Frame, for the preview
    step = Signal(object)  # StepResult
    gap = Signal(object)  # Gap: a live source was paused
    health = Signal(object)  # HealthChanged
    problem = Signal(str)  # something went wrong; the session goes on
    error = Signal(str)  # a message for the user; the session ends
    finished = Signal(str)  # an EndReason's value: "ended" | "stopped" | "error" | "max turns"

    def __init__(self, backend_factory: BackendFactory = default_backend,
                 source_factory: SourceFactory | None = None, exclude: object = None,
                 store: SessionStore | None = None) -> None:
        super().__init__()
        # The controller holds only a weak reference back: a worker ↔ controller cycle would be freed
        # by Python's cyclic GC on whatever thread it happens to run, deleting this QObject off its thread.
        relay = weakref.WeakMethod(self._relay)

        def listener(event: events.Event) -> None:
            method = relay()
            if method is not None:
                method(event)

        self.controller = SessionController(backend_factory, source_factory, store=store, listener=listener,
                                            exclude=exclude)
        self.start_requested.connect(self.run_session)

    def _relay(self, event: events.Event) -> None:
        """Controller event → signal (queued to the GUI when emitted on the worker thread)."""
        if isinstance(event, events.StepDone):
            self.step.emit(event.result)
        elif isinstance(event, events.FrameSampled):
            self.frame.emit(event.frame)
        elif isinstance(event, events.StateChanged):
            self.state_changed.emit(event.state.value)
        elif isinstance(event, events.Loading):
            self.loading.emit(event.what)
        elif isinstance(event, events.Started):
            self.started.emit(event.device, event.source_name)
        elif isinstance(event, events.Gap):
            self.gap.emit(event)
        elif isinstance(event, events.HealthChanged):
            self.health.emit(event)
        elif isinstance(event, events.Problem):
            self.problem.emit(event.message)
        elif isinstance(event, events.Failed):
            self.error.emit(event.message)
        elif isinstance(event, events.Finished):
            self.finished.emit(event.reason.value)

    @Slot(object)
    def run_session(self, request: RunRequest) -> None:
        self.controller.run(request)


class SessionThread:
    """Owns the QThread and the worker; ``close()`` stops the loop and joins before Qt dies."""

    def __init__(self, worker: SessionWorker) -> None:
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("duet-session")
        worker.moveToThread(self.thread)
        self.thread.start()

    def start(self, request: RunRequest) -> bool:
        """Start a session on the worker thread; False when one is already starting or running."""
        if not self.worker.controller.reserve():
            return False
        self.worker.start_requested.emit(request)
        return True

    def close(self, timeout_ms: int = 15000) -> None:
        controller = self.worker.controller
        controller.stop()
        self.thread.quit()  # handled once run() returns to the thread's event loop
        if not self.thread.wait(timeout_ms):
            log.warning("the session thread did not end within %d ms; its model is freed when it does",
                        timeout_ms)
        controller.release_backend()  # now if idle, else by the session itself when it ends
