"""Real servers on 127.0.0.1 for the serve / remote-backend tests: uvicorn for ASGI apps, and small
``http.server`` servers that misbehave on purpose (redirect, trickle, garbage, record headers)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator


def free_port() -> int:
    """A port that was free a moment ago. Racy (anything may take it before it is used): prefer
    :func:`serve_asgi` (it binds first), :func:`refused_port`, or port 0 and :func:`listening_port`."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``host`` where connections are refused for as long as the block runs: bound but never
    listening, so nothing else can take it meanwhile (a port merely found free and closed could be)."""
    s = socket.socket()
    try:
        s.bind((host, 0))
        yield s.getsockname()[1]
    finally:
        s.close()


def listening_port(proc: subprocess.Popen, limit: float = 120) -> int:
    """The TCP port a child process (a server started with port 0) listens on, once it listens.

    Read from Linux's /proc: the child's socket inodes matched against the LISTEN entries of the
    TCP tables. The limit only guards against a hang."""
    deadline = time.monotonic() + limit
    while True:
        ports = _listening_ports(proc.pid)
        if ports:
            assert len(ports) == 1, f"the server listens on several ports: {ports}"
            return ports[0]
        assert proc.poll() is None, f"the server exited (rc {proc.returncode}) before it listened"
        assert time.monotonic() < deadline, "the server did not listen"
        time.sleep(0.05)


def _listening_ports(pid: int) -> list[int]:
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # an fd closed meanwhile
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:  # sl local_address rem_address st ... inode (the 10th field); st 0A = LISTEN
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


@contextlib.contextmanager
def serve_asgi(app, sndbuf: int | None = None, **config) -> Iterator[str]:
    """Run ``app`` under uvicorn on a loopback port; yields ``http://127.0.0.1:PORT``.

    The socket is bound here and handed to uvicorn, so the port is ours from the start (no window
    between finding a free port and binding it in which something else could take it). ``sndbuf`` fixes
    the send buffer of every connection (they inherit it from this socket): Linux otherwise grows it to
    megabytes, so a test of a client that stops reading would need megabytes of reply before a send waits."""
    import uvicorn

    sock = socket.socket()
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert thread.is_alive(), "server thread died"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


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
