"""One deadline for a whole HTTP exchange: the watchdog both of Duet's HTTP clients use.

Why not a socket timeout: it restarts with every byte, so a server that trickles one byte a second is
never given up on. Why not a client library's timeouts (httpx, urllib3): they are per operation too
(connect, each read), and both clients here need what they lack besides: the remote backend waits for
its first byte on its own terms (app/engine/remote_backend.py), and the server's URL fetch connects to
the one address it checked (app/engine/serve_policy.py). At the deadline this shuts the socket, so
whatever read or write is blocked on it returns at once, and ``expired`` tells the caller why.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType


class ExchangeDeadline:
    """``with ExchangeDeadline(seconds, lambda: sock):`` — shut ``sock`` (looked up when the time comes, so it may
    be opened inside the block) after ``seconds``; ``expired`` says whether that happened."""

    def __init__(self, seconds: float, sock: Callable[[], socket.socket | None]) -> None:
        self._sock = sock
        self._expired = threading.Event()
        self._timer = threading.Timer(max(0.0, seconds), self._cut)
        self._timer.daemon = True

    def _cut(self) -> None:
        self._expired.set()
        s = self._sock()
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    @property
    def expired(self) -> bool:
        return self._expired.is_set()

    def event(self) -> threading.Event:
        """The flag itself, for a loop that waits on it (remote_backend's first-byte wait)."""
        return self._expired

    def __enter__(self) -> ExchangeDeadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()
