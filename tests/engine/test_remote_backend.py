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


# ---- issue 24 #8/#10: the first-byte wait, bounded bodies, passwords, over-long replies ---------------------
@pytest.mark.timeout(60)
def test_a_server_that_accepts_and_never_answers_fails_at_the_first_byte_wait_not_the_deadline():
    """It cost the whole 120 s deadline before any message; now the first-byte wait (1 s here) and a probe
    of /v1/models that goes unanswered too end it, long before the deadline (60 s here)."""
    stop = threading.Event()
    with serve_http(lambda h, rec: stop.wait(60)) as (base, rec):
        b = RemoteBackend(f"{base}/v1", model="m", timeout=60, retries=2, first_byte_timeout=1)
        try:
            with pytest.raises(BackendError) as e:
                b.step(frames(0), "hi")
        finally:
            stop.set()
    assert str(e.value) == (f"{base}/v1/chat/completions took the request but sent nothing back within 1 s, and "
                            f"does not answer GET {base}/v1/models either: the server is hung or overloaded. "
                            "Check (or restart) it, then start again.")
    assert [(m, p) for m, p, _ in rec.requests] == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]


@pytest.mark.timeout(60)
def test_a_server_that_is_slow_but_alive_is_waited_for_and_the_wait_is_reported():
    def handle(h, rec):
        if h.command == "GET":  # alive: the model list is answered at once, mid-generation
            send_json(h, 200, {"object": "list", "data": [{"id": "m"}]})
        else:
            time.sleep(2.5)
            send_json(h, 200, chat_reply("A red circle."))

    status: list[str] = []
    with serve_http(handle) as (base, rec):
        b = RemoteBackend(f"{base}/v1", model="m", timeout=30, retries=0, first_byte_timeout=0.5,
                          on_status=status.append)
        out = b.step(frames(0), "hi")
    assert out.text == "A red circle."
    assert status and status[0].startswith(f"waiting for {base}/v1/chat/completions: no answer yet after ")
    assert status[0].endswith("s; the server answers, so it is working on this step (Duet waits up to 30 s)")


@pytest.mark.timeout(120)
def test_an_endless_model_list_is_read_up_to_its_bound():
    stop = threading.Event()

    def endless(h, rec):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(b'{"data": [')
        while not stop.is_set():
            try:
                h.wfile.write(b'{"id": "m"},' * 4096)
            except OSError:
                return

    with serve_http(endless) as (base, _):
        try:
            with pytest.raises(BackendError) as e:
                RemoteBackend(f"{base}/v1", model="", timeout=60, retries=0)
        finally:
            stop.set()
    assert str(e.value) == f"{base}/v1/models: the answer is larger than 16 MB"


def test_a_password_in_the_url_is_in_no_error(monkeypatch):
    with refused_port() as port:
        with pytest.raises(BackendError) as e:
            RemoteBackend(f"http://user:hunter2@127.0.0.1:{port}/v1", model="m", timeout=2,
                          retries=0).step(frames(0), "hi")
    assert "hunter2" not in str(e.value) and "user" not in str(e.value)
    assert str(e.value).startswith(f"http://127.0.0.1:{port}/v1/chat/completions is not answering (")
    with serve_http(lambda h, rec: send_json(h, 200, b"not json")) as (base, _):
        evil = base.replace("http://", "http://admin:s3cret@")
        with pytest.raises(BackendError) as e:
            RemoteBackend(f"{evil}/v1", model="", timeout=5, retries=0)
    assert "s3cret" not in str(e.value) and str(e.value).startswith(f"{base}/v1/models answered")


def test_an_over_long_reply_is_cut_to_what_max_new_tokens_allows_and_said(caplog):
    huge = "A red circle. " * 150_000  # 2.1 MB: a server that ignores max_tokens
    with serve_http(lambda h, rec: send_json(h, 200, chat_reply(huge))) as (base, _):
        b = RemoteBackend(f"{base}/v1", model="m", timeout=30, retries=0)
        with caplog.at_level("WARNING", logger="duet.remote"):
            out = b.step(frames(0), "hi", max_new_tokens=32)
    assert len(out.text) <= 32 * 16 + 2 and out.text.endswith(" …") and out.text.startswith("A red circle.")
    assert b.messages[-1]["content"] == out.text  # what is re-sent with every later turn is the cut reply
    assert f"sent a reply of {len(huge):,} characters, more than 32 tokens can be; it was cut to 512" in caplog.text
