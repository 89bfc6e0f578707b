"""``duet serve``'s guard against a real llama-cpp-python server with the tiny model, on loopback."""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.engine.serve import ServePolicy, create_server_app, load_or_create_api_key, secure
from tests.engine.loopback import serve_asgi, serve_http

KEY = "k" * 32
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)  # the test servers' address, allowed explicitly


def png_url(w: int = 64, h: int = 48, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(url: str, max_tokens: int = 4) -> dict:
    return {"model": "mmduet2", "temperature": 0.0, "max_tokens": max_tokens, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "What is happening?"}]}]}


def call(base: str, method: str, path: str, body: object = None, key: str | None = KEY,
         headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        payload = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        payload = {"raw": raw.decode("utf-8", "replace")}
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload


@pytest.fixture(scope="module")
def stock_app(tiny_model):
    """llama-cpp-python's app with the MMDuet2 handler, unguarded (each test wraps it in a policy)."""
    # n_ctx 8192: room for a reply of thousands of tokens, which the cancellation tests interrupt.
    return create_server_app(tiny_model.model, tiny_model.mmproj, n_ctx=8192, n_gpu_layers=0)


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("allowed")
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(d / "frame.png")
    os.mkfifo(d / "pipe.png")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def server(stock_app, allowed_dir):
    policy = ServePolicy(api_key=KEY, allow_files=allowed_dir, max_body_mb=2.0,
                         max_image_pixels=200 * 200, fetch_timeout=2.0, body_timeout=2.0, max_tokens=8)
    with serve_asgi(secure(stock_app, policy)) as base:
        yield base


def test_a_chat_with_an_inline_image_is_served(server):
    status, _, out = call(server, "POST", "/v1/chat/completions", chat(png_url()))
    assert status == 200, out
    assert isinstance(out["choices"][0]["message"]["content"], str)
    assert out["usage"]["completion_tokens"] <= 8  # the server's max_tokens cap


@pytest.mark.parametrize("key", [None, "", "wrong" * 8, KEY + "x"])
def test_every_route_needs_the_key(server, key):
    for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", chat(png_url()))):
        status, headers, out = call(server, method, path, body, key=key)
        assert status == 401, (path, out)
        assert headers["www-authenticate"] == "Bearer"
        assert "API key" in out["error"]["message"]


def test_models_lists_the_alias(server):
    assert call(server, "GET", "/v1/models")[2]["data"][0]["id"] == "mmduet2"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings", "/docs", "/openapi.json", "/extras/tokenize"])
def test_routes_duet_does_not_use_do_not_exist(server, path):
    status, _, out = call(server, "POST" if "v1" in path or "extras" in path else "GET", path, {"prompt": "x"})
    assert status == 404
    assert "only /v1/chat/completions and /v1/models" in out["error"]["message"]


def test_no_cors_by_default(server):
    status, headers, _ = call(server, "OPTIONS", "/v1/chat/completions", key=None, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in headers
    status, headers, _ = call(server, "GET", "/v1/models", headers={"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers


def test_cors_only_for_named_origins(stock_app):
    policy = ServePolicy(api_key=KEY, cors_origins=("https://ok.example",))
    with serve_asgi(secure(stock_app, policy)) as base:
        _, headers, _ = call(base, "GET", "/v1/models", headers={"Origin": "https://ok.example"})
        assert headers["access-control-allow-origin"] == "https://ok.example"
        assert "access-control-allow-credentials" not in headers
        _, headers, _ = call(base, "GET", "/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in headers


@pytest.mark.parametrize(("ref", "message"), [
    ("file:///etc/passwd", "outside the allowed folder"),
    ("/etc/hostname", "outside the allowed folder"),
    ("../../../../etc/passwd", "outside the allowed folder"),
    ("ftp://127.0.0.1/x.png", "scheme 'ftp' is not accepted"),
    ("http://127.0.0.1:9/x.png", "remote image URLs are not allowed"),
    ("data:image/png,rawbytes", "must be base64"),
    ("data:image/png;base64,@@@@", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"not a picture").decode(), "could not be read"),
    ("pipe.png", "not a regular file"),
    ("notes.txt", "could not be read"),
    ("missing.png", "no such image file"),
])
def test_image_references_outside_the_policy_are_refused(server, ref, message):
    status, _, out = call(server, "POST", "/v1/chat/completions", chat(ref))
    assert status == 400, out
    assert message in out["error"]["message"]


def test_a_file_inside_the_allowed_folder_is_served(server, allowed_dir):
    for ref in ("frame.png", f"file://{allowed_dir / 'frame.png'}", str(allowed_dir / "frame.png")):
        status, _, out = call(server, "POST", "/v1/chat/completions", chat(ref))
        assert status == 200, (ref, out)


def test_a_symlink_out_of_the_allowed_folder_is_refused(server, allowed_dir, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(secret)
    (allowed_dir / "link.png").symlink_to(secret)
    status, _, out = call(server, "POST", "/v1/chat/completions", chat("link.png"))
    assert status == 400 and "outside the allowed folder" in out["error"]["message"]


def test_no_url_is_fetched_unless_allowed(server):
    with serve_http(lambda h, rec: h.send_error(404)) as (target, rec):
        status, _, out = call(server, "POST", "/v1/chat/completions", chat(f"{target}/frame.png"))
    assert status == 400 and "not allowed" in out["error"]["message"]
    assert rec.requests == []  # the server never reached the URL


@pytest.mark.parametrize(("address", "allowed"), [
    ("93.184.215.14", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.20", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("fd00::1", False), ("fe80::1%lo", False), ("::ffff:127.0.0.1", False), ("::ffff:192.168.1.20", False),
])
def test_urls_reach_public_addresses_only_by_default(address, allowed):
    from app.engine.serve import url_address_allowed

    assert url_address_allowed(address, ServePolicy(api_key=KEY, allow_urls=True)) is allowed
    lan = ServePolicy(api_key=KEY, allow_urls=True, url_networks=(ipaddress.ip_network("192.168.1.0/24"),))
    assert url_address_allowed(address, lan) is (allowed or address.endswith("192.168.1.20"))


def test_an_image_with_too_many_pixels_is_refused(server):
    status, _, out = call(server, "POST", "/v1/chat/completions", chat(png_url(400, 300)))
    assert status == 400
    assert out["error"]["message"] == "an image is 400×300 pixels; the server accepts at most 40000 pixels"


def test_a_body_over_the_limit_is_refused(server):
    status, _, out = call(server, "POST", "/v1/chat/completions", b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert status == 413 and "limit of 2 MB" in out["error"]["message"]


@pytest.mark.parametrize("body, words", [
    (b"[1, 2, 3]", "a JSON object"),  # an array, not an object
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # Python's parser would raise RecursionError
    (json.dumps({"model": {}, "messages": []}).encode(), "'model' must be a string"),
    (json.dumps({"messages": [1, "x", None, {"content": 5}]}).encode(), "messages[0] must be an object"),
])
def test_a_malformed_chat_is_a_400_never_a_500(server, body, words):
    status, _, out = call(server, "POST", "/v1/chat/completions", body)
    assert status != 500 and status < 500, out
    if words is not None:
        assert status == 400 and words in out["error"]["message"], out
    assert "/" not in json.dumps(out.get("error", {})), "no server path in the error"


def test_a_non_ascii_authorization_header_is_a_401(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\xe9\xe9-cl\xe9\r\n"
                     b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


def test_a_body_that_is_not_json_is_refused(server):
    status, _, out = call(server, "POST", "/v1/chat/completions", b"\xff\xfe garbage")
    assert status == 400 and "not JSON" in out["error"]["message"]


def test_too_many_images_are_refused(stock_app):
    with serve_asgi(secure(stock_app, ServePolicy(api_key=KEY, max_images=2))) as base:
        body = chat(png_url())
        body["messages"][0]["content"] *= 3
        status, _, out = call(base, "POST", "/v1/chat/completions", body)
    assert status == 400 and "3 images in one request" in out["error"]["message"]


def test_a_client_trickling_its_body_is_cut_off(server):
    import select

    host, port = server.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
              "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
    # A byte every half-second at most, until the server answers: it must cut the client off while the
    # client is still sending (a per-read timeout, reset by every byte, never would: the loop would run
    # out and the server's 408 would only come after the client fell silent). 60 bytes = 30 s or more,
    # far past the 2 s body deadline, so a loaded machine answering late still answers within the loop.
    for _ in range(60):
        try:
            s.sendall(b" ")
        except OSError:  # the server answered and closed already
            break
        if select.select([s], [], [], 0.5)[0]:  # the server answered (or closed)
            break
    else:
        pytest.fail("the server did not cut off a client still trickling its body")
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:  # headers and body may
        chunk = s.recv(4096)  # arrive in separate segments
        if not chunk:
            break
        answer += chunk
    answer = answer.decode()
    s.close()
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert "not received within 2 s" in answer


def test_models_answers_while_a_chat_waits_on_a_slow_url(stock_app):
    """A URL that never answers holds only its own request: /v1/models and other chats go on."""
    release = threading.Event()

    def hang(h, rec):
        release.wait(20)
        h.send_error(404)

    policy = ServePolicy(api_key=KEY, allow_urls=True, url_networks=LOOPBACK, fetch_timeout=3.0)
    with serve_http(hang) as (slow, _), serve_asgi(secure(stock_app, policy)) as base:
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(
            slow=call(base, "POST", "/v1/chat/completions", chat(f"{slow}/never.png"))))
        t.start()
        time.sleep(0.5)
        assert call(base, "GET", "/v1/models", timeout=2)[0] == 200  # while the slow one is pending
        assert call(base, "POST", "/v1/chat/completions", chat(png_url()), timeout=30)[0] == 200
        t.join(30)
        release.set()
    status, _, out = result["slow"]
    assert status == 400 and out["error"]["message"] == f"{slow}/never.png: not fetched within 3 s"


def test_an_allowed_url_is_fetched_and_served(stock_app):
    png = base64.b64decode(png_url().split(",")[1])

    def ok(h, rec):
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(png)))
        h.end_headers()
        h.wfile.write(png)

    with serve_http(ok) as (site, rec), \
            serve_asgi(secure(stock_app, ServePolicy(api_key=KEY, allow_urls=True, url_networks=LOOPBACK))) as base:
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(f"{site}/f.png"))
    assert status == 200, out
    assert [r[1] for r in rec.requests] == ["/f.png"]


def test_a_redirect_off_the_policy_is_refused_by_the_server(stock_app):
    def to_file(h, rec):
        h.send_response(302)
        h.send_header("Location", "file:///etc/passwd")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with serve_http(to_file) as (site, rec), \
            serve_asgi(secure(stock_app, ServePolicy(api_key=KEY, allow_urls=True, url_networks=LOOPBACK))) as base:
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(f"{site}/f.png"))
    assert status == 400
    assert out["error"]["message"] == (f"{site}/f.png (redirected to file:///etc/passwd): scheme 'file' is not "
                                       "fetched (http and https only)")
    assert [r[1] for r in rec.requests] == ["/f.png"]


def test_generation_stops_at_the_time_limit(stock_app, tiny_model):
    from llama_cpp.server import app as server_app

    handler = server_app._llama_proxy("mmduet2").chat_handler
    with serve_asgi(secure(stock_app, ServePolicy(api_key=KEY, max_tokens=24))) as base:
        handler.generation_timeout = None
        free = call(base, "POST", "/v1/chat/completions", chat(png_url(), max_tokens=24))[2]
        handler.generation_timeout = 1e-9  # already past: the next token is forced to end the reply
        try:
            cut = call(base, "POST", "/v1/chat/completions", chat(png_url(), max_tokens=24))[2]
        finally:
            handler.generation_timeout = None
    assert free["usage"]["completion_tokens"] > 1  # the random tiny model talks on when let
    assert cut["usage"]["completion_tokens"] <= 1
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_the_api_key_is_generated_once_and_private(tmp_path):
    path = tmp_path / "cfg" / "serve-api-key"
    key, new = load_or_create_api_key(path)
    assert new and len(key) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_api_key(path) == (key, False)
    path.write_text("short\n")
    with pytest.raises(ValueError, match="16 to 512 printable ASCII characters"):
        load_or_create_api_key(path)
    path.write_text("ключ-" * 8 + "\n")  # non-ASCII: it could never match a header (it answered 500 to all)
    with pytest.raises(ValueError, match="printable ASCII"):
        load_or_create_api_key(path)
    path.unlink()
    os.mkfifo(path)  # a FIFO in its place must not hang the server's start
    with pytest.raises(ValueError, match="not a regular file|regular"):
        load_or_create_api_key(path)


def test_a_mismatched_pair_is_refused_before_serving(tiny_model, tmp_path):
    from app.modelhub.validate import ModelFileError

    with pytest.raises(ModelFileError, match="not the text model; swap the two files"):
        create_server_app(tiny_model.mmproj, tiny_model.model, policy=ServePolicy(api_key=KEY))


# ---- a client that goes away -------------------------------------------------------------------------
def open_chat(base: str, body: dict) -> socket.socket:
    """Send a chat on a raw socket and leave the answer unread: the client that will walk away."""
    host, port = base.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def wait_for(condition, what: str, limit: float = 60) -> None:
    """Poll until ``condition()``; the limit only guards against a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


LONG = 8000  # tokens: with n_ctx 8192 the random tiny model would talk for a long while


def handler_control():
    from llama_cpp.server import app as server_app

    return server_app._llama_proxy("mmduet2").chat_handler.control


def cancelled_after(caplog) -> list[int]:
    return [int(m.group(1)) for r in caplog.records
            if (m := re.fullmatch(r"generation cancelled after (\d+) tokens: the client went away", r.getMessage()))]


def test_a_chat_whose_client_disconnects_is_cancelled_and_the_next_is_served(stock_app, caplog):
    control = handler_control()
    guarded = secure(stock_app, ServePolicy(api_key=KEY, max_tokens=LONG))
    with caplog.at_level(logging.WARNING, logger="duet.serve"), serve_asgi(guarded) as base:
        control.tokens = 0  # an earlier test's count: this chat's own generation must have started
        leaver = open_chat(base, chat(png_url(), max_tokens=LONG))
        wait_for(lambda: control.tokens > 0, "generation started")
        leaver.close()  # mid-generation
        wait_for(lambda: cancelled_after(caplog), "the generation was cancelled")
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(png_url(seed=1), max_tokens=4), timeout=120)
    assert status == 200, out
    assert isinstance(out["choices"][0]["message"]["content"], str)
    [n] = cancelled_after(caplog)
    assert 0 < n < LONG // 2  # ended where the client left, far short of the reply it asked for
    assert guarded.cancelled == 1 and guarded.served == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(r"client 127\.0\.0\.1:\d+ closed the connection during its chat; ending the generation",
                            m) for m in messages), messages


def test_a_queued_chat_whose_client_disconnects_never_reaches_the_model(stock_app, caplog):
    control = handler_control()
    guarded = secure(stock_app, ServePolicy(api_key=KEY, max_tokens=LONG))
    with caplog.at_level(logging.WARNING, logger="duet.serve"), serve_asgi(guarded) as base:
        control.tokens = 0  # an earlier test's count: the first chat's own generation must have started
        first = open_chat(base, chat(png_url(), max_tokens=LONG))
        wait_for(lambda: control.tokens > 0, "the first chat is generating")
        queued = open_chat(base, chat(png_url(seed=2), max_tokens=LONG))
        wait_for(lambda: guarded.waiting == 1, "the second chat is queued")
        queued.close()
        wait_for(lambda: guarded.waiting == 0, "the queued chat is dropped")
        first.close()
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(png_url(seed=1), max_tokens=4), timeout=120)
    assert status == 200, out
    messages = [r.getMessage() for r in caplog.records]
    assert sum("closed the connection while queued; its chat is dropped" in m for m in messages) == 1, messages
    # Three chats, two reached the model: the first (cancelled when its client left, or, on a machine so loaded
    # that it reached the end of its context first, served whole) and the last; the queued one never did.
    assert len(cancelled_after(caplog)) == guarded.cancelled <= 1
    assert guarded.cancelled + guarded.served == 2


def test_a_client_that_stays_gets_its_whole_reply(stock_app, caplog):
    """The disconnect watcher must not mistake the end of an answered exchange for a client leaving."""
    guarded = secure(stock_app, ServePolicy(api_key=KEY, max_tokens=64))
    with caplog.at_level(logging.WARNING, logger="duet.serve"), serve_asgi(guarded) as base:
        for seed in range(3):
            status, _, out = call(base, "POST", "/v1/chat/completions", chat(png_url(seed=seed), max_tokens=64))
            # "length": it ran to the 64 tokens asked for (usage's count re-tokenizes the random text)
            assert status == 200 and out["choices"][0]["finish_reason"] == "length", out
    assert guarded.served == 3 and guarded.cancelled == 0
    assert not [r for r in caplog.records if "closed the connection" in r.getMessage()]


def test_a_chat_ending_with_an_assistant_message_is_continued_not_closed():
    """The protocol's "I must reply." prefill (docs/protocol.md §1.4) reaches the model as the start of its reply:
    no <|im_end|> after it and no second assistant header. Any other chat renders as the stock template does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp.llama_chat_format import Qwen25VLChatHandler

    from app.engine.serve_handler import MMDuet2ChatHandler

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def render(fmt: str, messages: list[dict]) -> str:
        return env.from_string(fmt).render(messages=messages, add_generation_prompt=True)

    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "IMG"}},
                                         {"type": "text", "text": "What happens?"}]},
            {"role": "assistant", "content": "NO REPLY"},
            {"role": "user", "content": [{"type": "image_url", "image_url": "IMG2"}]}]
    mine = render(MMDuet2ChatHandler.CHAT_FORMAT, chat)
    assert mine == render(Qwen25VLChatHandler.CHAT_FORMAT, chat) + "\n"  # the newline the model was trained on
    prefilled = render(MMDuet2ChatHandler.CHAT_FORMAT, [*chat, {"role": "assistant", "content": "I must reply.\n"}])
    assert prefilled == mine + "I must reply.\n"
