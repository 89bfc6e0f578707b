"""Fault catalogue: sockets that never finish a request cannot lock a key holder out of ``duet serve`` (issue 24, item 3).

The attack as found: 70 sockets that each sent half a request line made the server answer 503 to everyone,
for as long as they stayed (uvicorn's ``limit_concurrency`` counted them, and nothing timed their headers
out). Here the real guarded server (llama-cpp-python with the bundled demo model behind ``ServeGuard``, under
uvicorn with ``duet serve``'s own options) is attacked on loopback, where attacker and key holder share
127.0.0.1, so a per-address limit alone would lock the key holder out too.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time

import pytest

from app.engine.serve import ServePolicy, create_server_app, secure
from app.engine.serve_conn import uvicorn_options
from tests.engine.loopback import serve_asgi
from tests.engine.test_serve import KEY, call, chat, png_url

PARTIAL = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"  # a request line and one header, never finished


@pytest.fixture(scope="module")
def stock_app(bundled_demo_model):
    model, mmproj = bundled_demo_model
    return create_server_app(model, mmproj, n_ctx=2048, n_gpu_layers=0)


@contextlib.contextmanager
def guarded(stock_app, **limits):
    policy = ServePolicy(api_key=KEY, max_tokens=8, **limits)
    app = secure(stock_app, policy)
    options = uvicorn_options(policy)
    with serve_asgi(app, **options) as base:
        yield base, app, options["http"].gate


def partial_socket(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(PARTIAL)
    return s


def read_to_close(s: socket.socket, limit: float = 60) -> bytes:
    """Everything the server sends until it closes; the limit only guards against a hang."""
    s.settimeout(limit)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(4096):
            got += chunk
    return got


def closed_now(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (readable with EOF, or reset) without waiting."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(4096, socket.MSG_PEEK) == b"" or s.recv(4096, socket.MSG_PEEK).startswith(b"HTTP/1.1 408")
    except OSError:
        return True


class Attacker:
    """Keeps ``n`` half-sent requests open against ``base`` for as long as it runs, replacing each one the
    server closes: the attack does not let up while the key holder is being served."""

    def __init__(self, base: str, n: int) -> None:
        self.base, self.n = base, n
        self.open: list[socket.socket] = []
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attacker:
        for _ in range(self.n):
            self.open.append(partial_socket(self.base))
            self.opened += 1
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in list(self.open):
                if closed_now(s):
                    self.open.remove(s)
                    s.close()
            while len(self.open) < self.n and not self._stop.is_set():
                with contextlib.suppress(OSError):
                    self.open.append(partial_socket(self.base))
                    self.opened += 1
            self._stop.wait(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.open:
            s.close()


def test_a_key_holder_is_served_while_80_half_sent_requests_stay_open(stock_app):
    with guarded(stock_app, header_timeout=5.0) as (base, app, gate), Attacker(base, 80) as attack:
        for seed in range(3):
            status, _, out = call(base, "POST", "/v1/chat/completions", chat(png_url(seed=seed)), timeout=60)
            assert status == 200, out
            assert call(base, "GET", "/v1/models", timeout=60)[0] == 200
        assert attack.opened >= 80
        assert len(gate) <= gate.per_client  # the attack holds at most its address's share of waiting slots
    assert app.served == 3 and app.refused == 0  # the half-sent requests never reached the guard
    assert gate.evicted >= 80 - gate.per_client


def test_half_sent_requests_are_closed_at_the_header_deadline_with_408(stock_app):
    with guarded(stock_app, header_timeout=1.0, header_waits_per_client=64) as (base, app, gate):
        t0 = time.monotonic()
        socks = [partial_socket(base) for _ in range(20)]
        replies = [read_to_close(s) for s in socks]
        waited = time.monotonic() - t0
        for s in socks:
            s.close()
    assert waited >= 1.0  # none was closed before its deadline
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"request headers not received within 1 s" in reply
    assert gate.timed_out == 20 and gate.evicted == 0 and len(gate) == 0


def test_the_header_deadline_holds_for_a_client_trickling_its_headers():
    """The deadline covers the whole header block: a byte every 0.2 s does not reset it."""
    from tests.engine.loopback import serve_asgi as serve

    async def app(scope, receive, send):  # never reached: the headers never complete
        raise AssertionError("a request whose headers never completed reached the app")

    policy = ServePolicy(api_key=KEY, header_timeout=1.0)
    with serve(app, **uvicorn_options(policy)) as base:
        s = partial_socket(base)
        for _ in range(150):  # 30 s or more: far past the 1 s deadline
            try:
                s.sendall(b"X")
            except OSError:
                break
            if select.select([s], [], [], 0.2)[0]:
                break
        else:
            pytest.fail("the server did not cut off a client still trickling its headers")
        reply = read_to_close(s)
        s.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_the_oldest_waiting_connections_of_an_address_make_room_for_new_ones(stock_app):
    with guarded(stock_app, header_timeout=30.0, header_waits_per_client=4) as (base, app, gate):
        socks = []
        for _ in range(10):
            socks.append(partial_socket(base))
            time.sleep(0.05)  # accepted in this order
        for s in socks[:6]:
            assert read_to_close(s) == b""  # evicted: closed without a word
        status, _, _ = call(base, "GET", "/v1/models")  # a seventh new connection evicts one more
        assert status == 200
        assert read_to_close(socks[6]) == b""
        assert not any(closed_now(s) for s in socks[7:])  # the newest three still wait for their deadline
        assert gate.waiting("127.0.0.1") <= 4
        for s in socks:
            s.close()
    assert gate.evicted >= 7


def test_a_request_without_the_key_is_answered_401_and_closed_before_its_body(stock_app):
    with guarded(stock_app) as (base, app, gate):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 50000000\r\n\r\n")  # 50 MB announced, none sent
            reply = read_to_close(s)  # the server closes: the body is never waited for
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), reply[:200]
        assert b"connection: close" in head.lower()
        assert "API key" in json.loads(body)["error"]["message"]
    assert app.refused == 1 and app.waiting == 0 and app.served == 0
