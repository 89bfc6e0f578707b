"""The remote backend against a real OpenAI-compatible server on loopback (llama-cpp-python's own)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import numpy as np
import pytest

from app.core import protocol
from app.engine.backend import BackendError
from app.engine.remote_backend import RemoteBackend


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def llama_server(tiny_model):
    """llama-cpp-python's FastAPI server with Duet's MMDuet2 chat handler, on 127.0.0.1."""
    uvicorn = pytest.importorskip("uvicorn")
    from app.engine.serve import create_server_app

    app = create_server_app(tiny_model.model, tiny_model.mmproj, n_ctx=4096, n_gpu_layers=0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (112, 140, 3), dtype=np.uint8) for _ in range(2)]


def test_remote_dialogue_grows_turn_by_turn(llama_server):
    b = RemoteBackend(llama_server, timeout=60)
    texts = []
    for k in range(3):
        out = b.step(frames(k), "What is happening?" if k == 0 else "", max_new_tokens=6)
        texts.append(out.text)
        assert out.n_tokens > 0 and out.timings.total_ms > 0
        assert out.silent == (protocol.is_silence(out.text) or not out.text.strip())
    roles = [m["role"] for m in b.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert b.messages[0]["content"] == protocol.SYSTEM_PROMPT
    first_user = b.messages[1]["content"]
    assert [c["type"] for c in first_user] == ["image_url", "image_url", "text"]  # images first, then text
    assert [m["content"] for m in b.messages if m["role"] == "assistant"] == texts
    b.reset(protocol.SYSTEM_PROMPT)
    assert len(b.messages) == 1


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"unexpected": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_remote_errors_are_clear():
    down = RemoteBackend(f"http://127.0.0.1:{free_port()}/v1", timeout=2, retries=1)
    with pytest.raises(BackendError, match="not answering"):
        down.step(frames(0), "hi")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        garbage = RemoteBackend(f"http://127.0.0.1:{srv.server_address[1]}/v1", timeout=5, retries=0)
        with pytest.raises(BackendError, match="unexpected shape"):
            garbage.step(frames(0), "hi")
        assert len(garbage.messages) == 1  # a failed step leaves the dialogue as it was
    finally:
        srv.shutdown()
