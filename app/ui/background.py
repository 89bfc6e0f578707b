"""One way to run slow work off the GUI thread: :class:`BackgroundOp` (in the spirit of Anki's ``QueryOp``).

``BackgroundOp(parent, op, success=…).run()`` runs ``op()`` on a daemon thread; ``success(result)``
then runs on the GUI thread, and so does ``failure(exc)``. Every exception reaches a handler, so a
button disabled while the work runs is always re-enabled: the default handler shows a
:class:`~app.core.errors.DuetError`'s (or an ``OSError``'s) message as it is, and anything else as an unexpected error
(logged with its traceback). ``finally_`` runs on the GUI thread after either.

With ``progress=handler``, ``op`` is called with one argument, a thread-safe ``report(value)``: each
value reaches ``handler(value)`` on the GUI thread, in order, before ``success`` (an install's progress bar).

Long-lived loops (the model session) have their own QThread (:mod:`app.ui.worker`); this is for
one-shot jobs: importing a model, transcribing a recording, downloading a file.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QWidget

from app.core.errors import DuetError, describe

log = logging.getLogger("duet.ui.background")
T = TypeVar("T")
_alive: set[BackgroundOp[Any]] = set()  # an op lives until its handlers have run


def report_failure(parent: QObject | None, exc: BaseException) -> None:
    """The default failure handler: into the window's problem banner when it has one, else the log."""
    if not isinstance(exc, (DuetError, OSError)):
        log.error("background work failed", exc_info=(type(exc), exc, exc.__traceback__))
    window = parent.window() if isinstance(parent, QWidget) else parent
    show = getattr(window, "show_problem", None)
    if callable(show):
        show(describe(exc))
    else:
        log.warning("%s", describe(exc))


class _Relay(QObject):
    """Lives on the GUI thread; its signals carry the outcome back there (queued)."""

    succeeded = Signal(object)
    failed = Signal(object)
    progressed = Signal(object)


class BackgroundOp(Generic[T]):
    """See the module docstring. Create and ``run()`` on the GUI thread."""

    def __init__(self, parent: QObject | None, op: Callable[..., T], *,
                 success: Callable[[T], None] | None = None,
                 failure: Callable[[BaseException], None] | None = None,
                 finally_: Callable[[], None] | None = None, name: str = "duet-background",
                 progress: Callable[[Any], None] | None = None) -> None:
        """``op`` takes no argument, or with ``progress`` the ``report`` function (module docstring)."""
        self.parent = parent
        self.op = op
        self.success = success
        self.failure = failure or (lambda exc: report_failure(parent, exc))
        self.finally_ = finally_
        self.name = name
        self._relay = _Relay()
        self._relay.succeeded.connect(self._on_success)
        self._relay.failed.connect(self._on_failure)
        if progress is not None:
            self._relay.progressed.connect(progress)
        self.with_progress = progress is not None
        self.thread: threading.Thread | None = None

    def run(self) -> BackgroundOp[T]:
        _alive.add(self)
        # The thread holds only the work and a weak reference to the relay: the relay (a QObject)
        # must be freed on the GUI thread, by _done, never by the worker thread dropping the last reference.
        op, relay, with_progress = self.op, weakref.ref(self._relay), self.with_progress

        def report(value: object) -> None:
            target = relay()
            if target is not None:
                target.progressed.emit(value)

        def work() -> None:
            try:
                result = op(report) if with_progress else op()
            except BaseException as e:  # noqa: BLE001 - every failure must reach a handler on the GUI thread
                outcome: tuple[str, object] = ("failed", e)
            else:
                outcome = ("succeeded", result)
            target = relay()
            if target is not None:
                getattr(target, outcome[0]).emit(outcome[1])

        self.thread = threading.Thread(target=work, name=self.name, daemon=True)
        self.thread.start()
        return self

    @Slot(object)
    def _on_success(self, result: T) -> None:
        try:
            if self.success is not None:
                self.success(result)
        except Exception as e:  # a failing success handler is still a failure to report
            self._on_failure(e)
            return
        self._done()

    @Slot(object)
    def _on_failure(self, exc: BaseException) -> None:
        try:
            self.failure(exc)
        except Exception:
            log.exception("the failure handler of %s failed", self.name)
        self._done()

    def _done(self) -> None:
        try:
            if self.finally_ is not None:
                self.finally_()
        finally:
            _alive.discard(self)
