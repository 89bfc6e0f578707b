"""The remote backend against a real OpenAI-compatible server on loopback (llama-cpp-python's own)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest

from app.core import protocol
from app.engine.backend import BackendError
from app.engine.remote_backend import RemoteBackend
from tests.engine.loopback import refused_port, serve_asgi


@pytest.fixture(scope="module")
def llama_server(tiny_model):
    """llama-cpp-python's FastAPI server with Duet's MMDuet2 chat handler, on 127.0.0.1."""
    from app.engine.serve import create_server_app

    app = create_server_app(tiny_model.model, tiny_model.mmproj, n_ctx=4096, n_gpu_layers=0)
    with serve_asgi(app) as base:
        yield f"{base}/v1"


def frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (112, 140, 3), dtype=np.uint8) for _ in range(2)]


def test_remote_dialogue_grows_turn_by_turn(llama_server):
    b = RemoteBackend(llama_server, timeout=60)
    texts = []
    for k in range(3):
        out = b.step(frames(k), "What is happening?" if k == 0 else "", max_new_tokens=6)
        texts.append(out.text)
        assert out.kv_cells > 0 and out.timings.total_ms > 0
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
    with refused_port() as port:
        down = RemoteBackend(f"http://127.0.0.1:{port}/v1", timeout=2, retries=1)
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


def test_remote_transcript_equals_in_process(bundled_demo_model, tmp_path):
    """The same trained model, in process and behind llama-cpp-python's server: the same transcript."""
    from app.capture.video import VideoFileSource
    from app.cli import main as duet
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.engine.serve import create_server_app
    from app.engine.session import ProactiveSession, SessionConfig

    assert duet(["eval", "make-synthetic", str(tmp_path / "v"), "--families", "appear,colour",
                 "--difficulty", "easy", "--per-family", "2", "--seed", "7"]) == 0
    videos = sorted((tmp_path / "v").rglob("*.avi"))
    assert len(videos) == 4
    model, mmproj = bundled_demo_model

    def play(backend, video):
        s = ProactiveSession(backend, SessionConfig(interval=1.0, frames_per_turn=2, max_new_tokens=24))
        s.ask("Tell me when a new shape appears.")
        with VideoFileSource(video, realtime=False) as src:
            out = [(r.video_time, r.silent, "" if r.silent else r.text.strip()) for r in s.run(src)]
        backend.close()
        return out

    with serve_asgi(create_server_app(model, mmproj, n_ctx=4096, n_gpu_layers=0)) as base:
        spoken = 0
        for v in videos:
            local = play(LlamaBackend(model, mmproj, LlamaSettings(n_ctx=4096, n_gpu_layers=0)), v)
            remote = play(RemoteBackend(f"{base}/v1", timeout=60), v)
            assert remote == local, v.name
            spoken += sum(not silent for _, silent, _ in local)
        assert spoken > 0  # the comparison covers replies, not only silence


# ---- hardening: redirects, deadline, terminal safety, errors that name the server ---------------------
from tests.engine.loopback import chat_reply, send_json, serve_http  # noqa: E402


def test_a_redirect_to_another_origin_is_refused_and_the_key_goes_nowhere(monkeypatch):
    monkeypatch.setenv("DUET_API_KEY", "secret-key-123456")
    with serve_http(lambda h, rec: send_json(h, 200, chat_reply("hello"))) as (other, other_rec), \
            serve_http(lambda h, rec: send_json(h, 307, {}, {"Location": f"{other}/v1/chat/completions"})) as (
                first, first_rec):
        b = RemoteBackend(f"{first}/v1", timeout=5, retries=0)
        with pytest.raises(BackendError) as e:
            b.step(frames(0), "hi")
    assert str(e.value).startswith(f"{first}/v1/chat/completions redirected to another server ({other}); refused")
    assert first_rec.requests[0][2]["authorization"] == "Bearer secret-key-123456"
    assert other_rec.requests == []  # neither the key nor the frames reached the other origin


def test_a_same_origin_307_is_followed_with_the_key(monkeypatch):
    monkeypatch.setenv("DUET_API_KEY", "secret-key-123456")

    def handle(h, rec):
        if h.path.startswith("/old"):
            send_json(h, 307, {}, {"Location": "/new/chat/completions"})
        else:
            send_json(h, 200, chat_reply("moved"))

    with serve_http(handle) as (base, rec):
        out = RemoteBackend(f"{base}/old", timeout=5, retries=0).step(frames(0), "hi")
    assert out.text == "moved"
    assert [(m, p, h.get("authorization")) for m, p, h in rec.requests] == [
        ("POST", "/old/chat/completions", "Bearer secret-key-123456"),
        ("POST", "/new/chat/completions", "Bearer secret-key-123456")]


@pytest.mark.timeout(120)  # a deadline that never fires hangs: the read waits for 1 MB at 2 bytes a second
def test_a_server_trickling_a_byte_a_second_is_given_up_at_the_deadline():
    stop = threading.Event()

    def trickle(h, rec):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        while not stop.is_set():
            try:
                h.wfile.write(b" ")
                h.wfile.flush()
            except OSError:
                return
            stop.wait(0.5)

    with serve_http(trickle) as (base, rec):
        b = RemoteBackend(f"{base}/v1", timeout=2, retries=2)
        try:
            # Only the whole-request watchdog produces this message; a per-read timeout would be reset by
            # every byte and never fire (the test would hang until the timeout mark above).
            with pytest.raises(BackendError, match=r"gave no complete answer within 2 s \(the whole-request deadline\)"):
                b.step(frames(0), "hi")
        finally:
            stop.set()
    assert len(rec.requests) == 1  # given up at the deadline, not retried (retries=2 would send it again)


def test_a_server_that_accepts_and_never_answers_is_given_up_at_the_deadline():
    with serve_http(lambda h, rec: time.sleep(8)) as (base, _):
        with pytest.raises(BackendError, match="within 1 s"):
            RemoteBackend(f"{base}/v1", timeout=1, retries=0).step(frames(0), "hi")


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff\xfe\x00garbage", "answered with something that is not JSON"),
    (b"<html>proxy login</html>", "answered with something that is not JSON ('<html>proxy login</html>')"),
    (b'{"choices": [{"message": {"content": ["list"]}}]}', "answered in an unexpected shape"),
    (b'{"choices": []}', "answered in an unexpected shape"),
    (b"[1, 2]", "answered in an unexpected shape"),
])
def test_garbage_answers_name_the_server(body, message):
    with serve_http(lambda h, rec: send_json(h, 200, body)) as (base, _):
        with pytest.raises(BackendError) as e:
            RemoteBackend(f"{base}/v1", timeout=5, retries=0).step(frames(0), "hi")
    assert str(e.value).startswith(f"{base}/v1/chat/completions ")
    assert message in str(e.value)


def test_escape_sequences_in_replies_never_reach_the_terminal():
    evil = "Look\x1b[2J\x1b]0;pwned\x07 at\x1b]52;c;ZXZpbA==\x1b\\ this\x9b31m\r\x08 now\x00"
    with serve_http(lambda h, rec: send_json(h, 200, {**chat_reply(evil), "usage": "nonsense"})) as (base, _):
        out = RemoteBackend(f"{base}/v1", timeout=5, retries=0).step(frames(0), "hi")
    assert out.text == "Look at this now"
    assert out.kv_cells == 0


def test_a_refusal_names_the_server_and_strips_escapes():
    with serve_http(lambda h, rec: send_json(h, 401, b"\x1b[31mno key\x1b[0m")) as (base, _):
        with pytest.raises(BackendError) as e:
            RemoteBackend(f"{base}/v1", timeout=5, retries=0).step(frames(0), "hi")
    assert str(e.value) == f"{base}/v1/chat/completions refused the request (HTTP 401): no key"
