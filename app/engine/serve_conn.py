"""Connections before they are requests: why sockets that never finish a request cannot stall ``duet serve``.

uvicorn (the server under ``duet serve``) has no timeout on a request's headers, and its only limit
(``limit_concurrency``) counts every open connection: 70 sockets that each sent half a request line made
the server answer 503 to everyone, the key holder included, for as long as they stayed (slowloris). The
guard (:class:`app.engine.serve.ServeGuard`) cannot help: it only sees a request once its headers are in.

So the connection is guarded first, in uvicorn's own HTTP protocol (:func:`guarded_protocol` subclasses its
h11 protocol; uvicorn takes the class as ``Config(http=…)``). A connection with no request in progress —
just accepted, idle between requests, or past its reply — is *waiting*, and a :class:`HeaderGate` holds
every waiting connection to two rules:

* **a deadline for the whole header block**: ``header_timeout`` seconds from the accept (or from the
  end of the previous reply), however the bytes trickle in, not reset by each byte. A connection that
  has not sent complete headers by then is answered 408 (if it sent part of a request) and closed;
* **a cap per client address** (``header_waits_per_client``; an IPv6 /64 counts as one address, as
  anyone who has one address has the whole /64) **and in all** (``header_waits``): past either, the
  *oldest* waiting connection of that address (or of all) whose headers have not arrived — even unread,
  in the kernel's buffer — is closed. New connections are never refused:
  a client that is about to send its headers in the next millisecond — the key holder — gets in, and
  the sockets that have waited longest, which are the ones that stall, make room. This matters on
  loopback, where every client shares 127.0.0.1: a cap that refused new connections would lock the key
  holder out with the attacker.

A connection stops waiting the moment its headers are complete; then the guard checks the key at once:
without it, a 401 and the connection closed (the body is never read, nothing is queued). A request
with the key is no longer limited here; the guard bounds what it may hold (``max_queued`` chats
waiting for the model, the body's size and deadline, the queue and generation time limits), which is
why ``duet serve`` no longer sets uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from app.engine.serve_policy import ServePolicy

log = logging.getLogger("duet.serve")

REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: %d\r\n\r\n%s")


def client_key(host: str | None) -> str:
    """The address a client is counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4)."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:  # a Unix socket's path, or whatever a transport reports
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class HeaderGate:
    """The connections waiting for a request's headers, oldest first, per client address and in all."""

    def __init__(self, timeout: float, per_client: int, total: int) -> None:
        if timeout <= 0 or per_client < 1 or total < 1:
            raise ValueError("the header timeout must be > 0 and the connection limits ≥ 1")
        self.timeout = timeout
        self.per_client = per_client
        self.total = total
        self._all: dict[Any, str] = {}  # connection → its client key; dicts keep insertion order: oldest first
        self._by_client: dict[str, dict[Any, None]] = {}
        self.timed_out = 0  # connections closed at the header deadline
        self.evicted = 0  # connections closed to make room under a cap
        self._warned = 0.0

    def __len__(self) -> int:
        return len(self._all)

    def waiting(self, key: str) -> int:
        return len(self._by_client.get(key, ()))

    def enter(self, conn: Any, key: str) -> list[Any]:
        """Count ``conn`` as waiting; returns the connections that must be closed to stay within the caps."""
        self._all[conn] = key
        self._by_client.setdefault(key, {})[conn] = None
        over: list[Any] = []
        mine = self._by_client[key]
        while len(mine) > self.per_client:
            over.append(victim := self._victim(mine))
            self.leave(victim)
        while len(self._all) > self.total:
            over.append(victim := self._victim(self._all))
            self.leave(victim)
        self.evicted += len(over)
        if over:
            self.note(f"closed {len(over)} connection(s) still sending headers to make room for a new one from {key} "
                      f"(at most {self.per_client} per address, {self.total} in all)")
        return over

    @staticmethod
    def _victim(conns: dict[Any, Any]) -> Any:
        """The oldest connection that is stalling, i.e. has no complete headers even among the bytes not
        read yet; the oldest of all if every one has them (they are about to leave the wait anyway).

        Why look at unread bytes: the event loop accepts connections in batches and reads them later, so
        a key holder's connection, its request already in the kernel's buffer, would otherwise be the
        oldest unread one when an attacker opens new sockets as fast as old ones are closed.
        """
        first = None
        for conn in conns:
            if not conn.headers_in_hand():
                return conn
            first = first or conn
        return first

    def leave(self, conn: Any) -> None:
        key = self._all.pop(conn, None)
        if key is not None:
            mine = self._by_client[key]
            mine.pop(conn, None)
            if not mine:
                del self._by_client[key]

    def note(self, message: str) -> None:
        """Say it, at most once a minute: an attack opens thousands of sockets, the log must not grow by as many."""
        now = time.monotonic()
        if now - self._warned >= 60:
            self._warned = now
            log.warning("%s; %d timed out and %d evicted so far", message, self.timed_out, self.evicted)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header deadline and caps of :class:`HeaderGate` (module docstring)."""

    gate: HeaderGate  # set on the subclass :func:`guarded_protocol` makes: one gate per server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._key = "?"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._key = client_key(self.client[0] if self.client else None)
        self._sync()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._sync()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def headers_in_hand(self) -> bool:
        """Whether a complete header block has arrived: parsed, or still in the kernel's buffer (a peek)."""
        buffered = self.conn.trailing_data[0]
        if b"\r\n\r\n" in buffered:
            return True
        try:
            sock = socket.socket(fileno=self.transport.get_extra_info("socket").fileno())  # the same fd, no dup
        except (AttributeError, OSError):
            return False
        try:
            peeked = sock.recv(16 * 1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # nothing there (EAGAIN), or the connection is gone
            peeked = b""
        finally:
            sock.detach()  # the transport still owns the fd
        return b"\r\n\r\n" in buffered[-3:] + peeked

    def _sync(self) -> None:
        """Start or stop the wait: a connection waits whenever no request of its own is in progress."""
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.gate.timeout, self._timed_out)
                for conn in self.gate.enter(self, self._key):
                    conn._close()
        else:
            self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self.gate.leave(self)

    def _timed_out(self) -> None:
        self._deadline = None
        self.gate.leave(self)
        if self.transport.is_closing():
            return
        self.gate.timed_out += 1
        self.gate.note(f"closed a connection from {self._key} that sent no complete request headers within "
                       f"{self.gate.timeout:g} s")
        if self.conn.trailing_data[0]:  # part of a request came: say why it ends (an idle keep-alive just closes)
            body = (b'{"error": {"message": "request headers not received within %g s", '
                    b'"type": "invalid_request_error", "param": null, "code": null}}' % self.gate.timeout)
            self.transport.write(REQUEST_TIMEOUT % (len(body), body))
        self._close()

    def _close(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()


def guarded_protocol(policy: ServePolicy) -> type[H11Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=…)`` with its own :class:`HeaderGate` from ``policy``."""
    gate = HeaderGate(policy.header_timeout, policy.header_waits_per_client, policy.header_waits)
    return type("GuardedH11Protocol", (_GuardedH11Protocol,), {"gate": gate})


def uvicorn_options(policy: ServePolicy) -> dict[str, Any]:
    """The uvicorn settings ``duet serve`` runs with (the CLI and the tests alike).

    No ``limit_concurrency``: it counted every open connection, strangers' half-sent requests included
    (module docstring); the gate and the guard bound what each kind may hold instead.
    """
    return {"http": guarded_protocol(policy), "timeout_keep_alive": 5, "h11_max_incomplete_event_size": 16 * 1024}
