"""Real servers on 127.0.0.1 for the serve / remote-backend tests: uvicorn for ASGI apps, and small
``http.server`` servers that misbehave on purpose (redirect, trickle, garbage, record headers)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def serve_asgi(app, **config) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server thread died"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Recorder:
    """What a misbehaving server saw: one (method, path, headers) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []


@contextlib.contextmanager
def serve_http(handle: Callable[[http.server.BaseHTTPRequestHandler, Recorder], None],
               host: str = "127.0.0.1", tls: tuple[str, str] | None = None) -> Iterator[tuple[str, Recorder]]:
    """A threading ``http.server`` on ``host`` (any of 127.0.0.0/8) whose every request is answered by
    ``handle``; with ``tls`` = (certificate file, key file) it speaks https. Yields (base URL, recorder)."""
    rec = Recorder()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            rec.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            n = int(self.headers.get("Content-Length", 0) or 0)
            if n:
                self.rfile.read(n)
            handle(self, rec)

        do_GET = do_POST = _any  # noqa: N815 - http.server's naming

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((host, 0), Handler)
    srv.daemon_threads = True
    if tls is not None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{host}:{srv.server_address[1]}", rec
    finally:
        srv.shutdown()
        srv.server_close()


def send_json(h: http.server.BaseHTTPRequestHandler, status: int, payload: object,
              headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def chat_reply(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
