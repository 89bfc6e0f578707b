"""The bridge between the Qt-free session and the GUI: one long-lived QThread runs the model loop.

The GUI thread never touches the backend. :class:`SessionWorker` lives on its own QThread, loads
the model there (and keeps it loaded between sessions: loading is the slow part), opens the source
there and iterates :meth:`ProactiveSession.run`. Results cross to the GUI as queued signals carrying
plain Python objects. Control goes the other way through thread-safe calls only: ``session.ask``,
``session.stop``, a pause event, and closing the source from a helper thread (closing a screen source
from the GUI thread could deadlock: its grab waits for the GUI to hide the overlay).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.capture.base import CaptureError, FrameSource
from app.core.types import Frame
from app.engine.backend import Backend, BackendError
from app.engine.session import ProactiveSession, SessionConfig

log = logging.getLogger("duet.ui.worker")


@dataclass
class RunRequest:
    source: str  # a source spec (app.capture.parse)
    model: str  # a model reference (app.modelhub.library.resolve_model)
    config: SessionConfig = field(default_factory=SessionConfig)
    mmproj: str | None = None
    n_ctx: int = 4096


BackendFactory = Callable[[RunRequest], Backend]
SourceFactory = Callable[[RunRequest], FrameSource]


def default_backend(request: RunRequest) -> Backend:
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.modelhub.library import resolve_model

    model, mmproj = resolve_model(request.model, request.mmproj)
    # Leave one core to the GUI (and the voice): with every core decoding, the event loop
    # waits for the scheduler and the window stutters (bench/gui_responsiveness.py).
    threads = max(1, (os.cpu_count() or 2) - 1)
    return LlamaBackend(model, mmproj, LlamaSettings(n_ctx=request.n_ctx, n_threads=threads))


class _TappedSource(FrameSource):
    """Wraps the real source: shows each sampled frame in the preview and holds the loop while paused.

    A frame that was waiting when pause began is dropped on resume, so the model never answers a
    picture that is minutes old; live sources then skip ahead on their own clock.
    """

    def __init__(self, inner: FrameSource, worker: SessionWorker) -> None:
        self.inner = inner
        self.worker = worker
        self.name = inner.name
        self.live = inner.live

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    @property
    def status(self) -> str:
        return self.inner.status

    def sample(self, interval: float) -> Iterator[Frame]:
        for frame in self.inner.sample(interval):
            if self.worker.stopping:
                return
            if self.worker.wait_while_paused():
                continue  # paused meanwhile: this frame is stale
            self.worker.frame.emit(frame)
            yield frame


class SessionWorker(QObject):
    """Runs sessions on its thread. Create it, ``moveToThread``, then emit ``start_requested``."""

    start_requested = Signal(object)  # RunRequest, queued onto the worker thread
    loading = Signal(str)  # what is being loaded
    started = Signal(str, str)  # device, source name
    frame = Signal(object)  # Frame, for the preview
    step = Signal(object)  # StepResult
    paused_changed = Signal(bool)
    error = Signal(str)  # a message for the user; the session ends
    finished = Signal(str)  # reason: "ended" | "stopped" | "error"

    def __init__(self, backend_factory: BackendFactory = default_backend,
                 source_factory: SourceFactory | None = None, exclude: object = None) -> None:
        super().__init__()
        self.backend_factory = backend_factory
        self.source_factory = source_factory
        self.exclude = exclude
        self.backend: Backend | None = None
        self._backend_key: tuple[str, str | None, int] | None = None
        self.session: ProactiveSession | None = None
        self.source: FrameSource | None = None
        self.stopping = False
        self._resume = threading.Event()
        self._resume.set()
        self.step_threads: set[int] = set()  # idents of the threads that ran model steps (tests check this)
        self.start_requested.connect(self.run_session)

    # ---- called from the GUI thread (thread-safe) -------------------------------------------
    def ask(self, text: str) -> bool:
        session = self.session
        if session is None:
            return False
        session.ask(text)
        return True

    def set_paused(self, paused: bool) -> None:
        (self._resume.clear if paused else self._resume.set)()
        self.paused_changed.emit(paused)

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def set_talkativeness(self, value: float) -> None:
        if self.session is not None:
            self.session.config.talkativeness = float(value)  # read once per step by the worker

    def request_stop(self) -> None:
        """Ask the loop to end soon; returns at once (the source is closed from a helper thread)."""
        self.stopping = True
        self._resume.set()
        if self.session is not None:
            self.session.stop()
        source = self.source
        if source is not None:
            threading.Thread(target=self._close_quietly, args=(source,), name="duet-close-source",
                             daemon=True).start()

    @staticmethod
    def _close_quietly(source: FrameSource) -> None:
        try:
            source.close()
        except Exception:
            log.exception("closing the source failed")

    # ---- worker thread ----------------------------------------------------------------------
    def wait_while_paused(self) -> bool:
        """Block while paused; True when a pause happened (so the caller drops its stale frame)."""
        if self._resume.is_set():
            return False
        self._resume.wait()
        return True

    def _ensure_backend(self, request: RunRequest) -> Backend:
        key = (request.model, request.mmproj, request.n_ctx)
        if self.backend is None or self._backend_key != key:
            if self.backend is not None:
                self.backend.close()
                self.backend = None
            self.loading.emit(f"Loading model {request.model}…")
            self.backend = self.backend_factory(request)
            self._backend_key = key
        return self.backend

    def _open_source(self, request: RunRequest) -> FrameSource:
        if self.source_factory is not None:
            src = self.source_factory(request)
        else:
            from app.capture.parse import build_source

            src = build_source(request.source, realtime=True, exclude=self.exclude)
        self.loading.emit(f"Opening {src.name}…")
        src.open()
        return src

    @Slot(object)
    def run_session(self, request: RunRequest) -> None:
        self.stopping = False
        self._resume.set()
        reason = "ended"
        try:
            try:
                backend = self._ensure_backend(request)
            except (BackendError, ValueError, OSError) as e:  # ModelFileError is a ValueError
                raise _UserError(f"The model could not be loaded: {e}") from e
            try:
                inner = self._open_source(request)
            except (CaptureError, ValueError) as e:
                raise _UserError(str(e)) from e
            self.source = inner
            if self.stopping:  # stop was pressed while the model or source was loading
                inner.close()
                reason = "stopped"
                return
            self.session = session = ProactiveSession(backend, request.config)
            self.started.emit(getattr(backend, "device", "?"), inner.name)
            me = threading.get_ident()
            for result in session.run(_TappedSource(inner, self)):
                self.step_threads.add(me)
                self.step.emit(result)
                if self.stopping:
                    break
            if self.stopping:
                reason = "stopped"
        except _UserError as e:
            reason = "error"
            self.error.emit(str(e))
        except CaptureError as e:
            reason = "error"
            self.error.emit(f"The source stopped working: {e}")
        except BackendError as e:
            reason = "error"
            self.error.emit(f"The model failed: {e}")
        except Exception as e:  # never let the thread die silently; the user gets the message
            log.exception("session crashed")
            reason = "error"
            self.error.emit(f"Unexpected error: {type(e).__name__}: {e}")
        finally:
            src, self.source = self.source, None
            if src is not None:
                self._close_quietly(src)
            self.session = None
            self.finished.emit(reason)

    @Slot()
    def shutdown(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


class _UserError(Exception):
    """A failure to start whose message is already written for the user."""


class SessionThread:
    """Owns the QThread and the worker; ``close()`` stops the loop and joins before Qt dies."""

    def __init__(self, worker: SessionWorker) -> None:
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("duet-session")
        worker.moveToThread(self.thread)
        self.thread.start()

    def start(self, request: RunRequest) -> None:
        self.worker.start_requested.emit(request)

    def close(self, timeout_ms: int = 15000) -> None:
        self.worker.request_stop()
        deadline = time.monotonic() + timeout_ms / 1000
        self.thread.quit()  # handled once run_session returns to the thread's event loop
        self.thread.wait(max(0, int((deadline - time.monotonic()) * 1000)))
        if self.worker.backend is not None:  # the thread has ended: freeing here is safe
            self.worker.backend.close()
            self.worker.backend = None
