"""The model a :class:`~app.engine.controller.SessionController` keeps loaded between sessions.

Loading is the slow part, so the backend stays for the next Start with the same model and settings, and is
freed only when no step can be using it (:meth:`ModelSlot.release` while a session runs frees it after).
After the engine's process died (app/engine/engine_process.py) it is dropped, never reused, and the
settings changes its crash offered (CPU only, portable kernels) stay in :attr:`ModelSlot.fallback` for
every later start.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from app.engine.backend import Backend
from app.engine.factory import BackendFactory, RunRequest


class ModelSlot:
    def __init__(self, factory: BackendFactory, *, loading: Callable[[str], None],
                 status: Callable[[str], None]) -> None:
        self.factory = factory
        self.backend: Backend | None = None
        self.fallback: dict[str, object] = {}
        self._key: tuple[object, ...] | None = None
        self._loading, self._status = loading, status  # "Loading model …"; a remote server's long wait
        self._lock = threading.Lock()
        self._free_later = False

    def ensure(self, request: RunRequest) -> Backend:
        """The backend for ``request`` (the fallback applied): the one loaded if it matches, else a new one."""
        if self.fallback:
            request = dataclasses.replace(request, backend=dataclasses.replace(request.backend, **self.fallback))
        key = (request.model, request.mmproj, request.backend, request.remote)
        if self.backend is None or self._key != key:
            if self.backend is not None:
                self.backend.close()
                self.backend = None
            self._loading(f"Loading model {request.model}…")
            self.backend = self.factory(request)
            self._key = key
            if hasattr(self.backend, "on_status"):  # a remote server's long wait is said while it lasts
                self.backend.on_status = self._status
        return self.backend

    def drop_dead(self, crash: BaseException) -> None:
        """The engine's process died: close (reap) it, and keep what its crash offered for the next start."""
        with self._lock:
            backend, self.backend, self._key = self.backend, None, None
            self.fallback.update(getattr(crash, "fallback", {}) or {})
        if backend is not None:
            backend.close()  # reaps the dead process and frees its shared memory

    def release(self, *, in_use: bool) -> Backend | None:
        """Let go of the model now, or (``in_use``) when :meth:`session_ended` says the session using it ended.

        Returns the backend to close: the caller closes it outside its own lock (closing the engine's process
        waits for it), having decided ``in_use`` under that lock, so no session can take the model meanwhile."""
        with self._lock:
            if in_use:
                self._free_later = True
                return None
            backend, self.backend, self._key = self.backend, None, None
            return backend

    def session_ended(self) -> Backend | None:
        """The session ended: the backend to close if a release waited for it, else None."""
        with self._lock:
            free, self._free_later = self._free_later, False
        return self.release(in_use=False) if free else None
