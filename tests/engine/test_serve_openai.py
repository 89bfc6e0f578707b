"""``duet serve`` as OpenAI's clients use it: the official ``openai`` Python client against the guarded
llama-cpp-python server with the tiny model, on loopback (and once against the real ``duet serve`` process).

What chat front ends do by default is checked here: streaming (server-sent ``chat.completion.chunk`` events
ending with ``data: [DONE]``), the model list naming the served model, a model that is not served refused
with OpenAI's 404 ``model_not_found``, the key enforced, logprobs; and that a stream keeps the guard's
limits: the reply-length cap, the generation time limit, cancellation when the client leaves, and a client
that stops reading its stream losing the model instead of holding it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from app.engine.serve import ServePolicy, create_server_app, secure
from tests.engine.loopback import listening_port, serve_asgi
from tests.engine.test_serve import cancelled_after, png_url, wait_for

KEY = "o" * 32
ALIAS = "tiny-served"  # a name other than the stock default, so a default leaking through would show
REPO = Path(__file__).resolve().parents[2]


def messages(seed: int = 0, text: str = "What is happening?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(seed=seed)}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def stock_app(tiny_model):
    """llama-cpp-python's app with the MMDuet2 handler, served as ALIAS; each test puts a guard in front."""
    return create_server_app(tiny_model.model, tiny_model.mmproj, n_ctx=8192, n_gpu_layers=0, alias=ALIAS)


@pytest.fixture(scope="module")
def guarded(stock_app):
    guard = secure(stock_app, ServePolicy(api_key=KEY, alias=ALIAS, max_tokens=16))
    with serve_asgi(guard) as base:
        yield base, guard


def client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


def test_a_plain_chat_with_logprobs(guarded):
    base, _ = guarded
    out = client(base).chat.completions.create(model=ALIAS, messages=messages(), max_tokens=8, temperature=0,
                                               logprobs=True, top_logprobs=2)
    assert out.object == "chat.completion" and out.model == ALIAS
    choice = out.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.role == "assistant"
    assert choice.logprobs is not None and len(choice.logprobs.content) >= 1
    # (at most 2: llama-cpp-python keys its alternatives by text, so two tokens decoding alike count once)
    assert all(1 <= len(t.top_logprobs) <= 2 and t.logprob <= 0 for t in choice.logprobs.content)


def test_a_streamed_reply_is_the_plain_reply_in_chunks(guarded):
    """Greedy decoding, the same request: the chunks put together are exactly the plain reply."""
    base, _ = guarded
    c = client(base)
    plain = c.chat.completions.create(model=ALIAS, messages=messages(1), max_tokens=12, temperature=0)
    chunks = list(c.chat.completions.create(model=ALIAS, messages=messages(1), max_tokens=12, temperature=0,
                                            stream=True))
    assert len(chunks) >= 3  # a role chunk, content, the finish
    assert all(ch.object == "chat.completion.chunk" and ch.model == ALIAS for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text == plain.choices[0].message.content and text
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == plain.choices[0].finish_reason
    assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])


def test_the_stream_on_the_wire_is_server_sent_events_ending_with_done(guarded):
    base, _ = guarded
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": ALIAS, "messages": messages(2), "max_tokens": 4, "stream": True}),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read().decode()
    conn.close()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = [e for e in re.split(r"\r?\n\r?\n", raw) if e.strip() and not e.startswith(":")]  # ":" = ping
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert json.loads(e.removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_the_model_list_names_the_served_model(guarded):
    base, guard = guarded
    c = client(base)
    assert [m.id for m in c.models.list()] == [ALIAS]
    model = c.models.retrieve(ALIAS)
    assert model.id == ALIAS and model.owned_by == "duet" and model.created == guard.created
    with pytest.raises(openai.NotFoundError) as e:
        c.models.retrieve("gpt-4o")
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_naming_another_model_is_a_404_model_not_found(guarded, stream):
    base, guard = guarded
    served = guard.served
    with pytest.raises(openai.NotFoundError) as e:
        client(base).chat.completions.create(model="mmduet2", messages=messages(), max_tokens=4,
                                             stream=stream)
    assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
    assert e.value.body["message"] == ("The model 'mmduet2' does not exist on this server; it serves "
                                       f"'{ALIAS}' (GET /v1/models lists it)")
    assert guard.served == served  # refused before the model


def test_a_chat_naming_no_model_is_answered_as_the_served_one(guarded):
    """Not with the server's file path, which llama-cpp-python would put in the reply's ``model``."""
    base, _ = guarded
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"messages": messages(), "max_tokens": 2}),
                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and out["model"] == ALIAS


@pytest.mark.parametrize("key", ["", "wrong-key-" * 4])
def test_the_key_is_enforced_for_chats_streams_and_the_model_list(guarded, key):
    base, guard = guarded
    c = client(base, key=key or "x")
    served = guard.served
    for call in (lambda: c.models.list(),
                 lambda: c.chat.completions.create(model=ALIAS, messages=messages(), max_tokens=2),
                 lambda: list(c.chat.completions.create(model=ALIAS, messages=messages(), max_tokens=2,
                                                        stream=True))):
        with pytest.raises(openai.AuthenticationError) as e:
            call()
        assert e.value.status_code == 401 and "API key" in e.value.message
    assert guard.served == served


def test_a_stream_keeps_the_reply_length_cap(guarded):
    base, _ = guarded
    chunks = list(client(base).chat.completions.create(model=ALIAS, messages=messages(3), max_tokens=4000,
                                                       temperature=0, stream=True))
    content = [ch for ch in chunks if ch.choices[0].delta.content]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert 1 <= len(content) <= 16  # the server's cap (16), not the 4,000 asked for


def test_a_stream_stops_at_the_generation_time_limit(stock_app):
    from llama_cpp.server import app as server_app

    handler = server_app._llama_proxy(ALIAS).chat_handler
    with serve_asgi(secure(stock_app, ServePolicy(api_key=KEY, alias=ALIAS, max_tokens=24))) as base:
        handler.generation_timeout = 1e-9  # already past: the first token is forced to end the reply
        try:
            chunks = list(client(base).chat.completions.create(model=ALIAS, messages=messages(),
                                                               max_tokens=24, temperature=0, stream=True))
        finally:
            handler.generation_timeout = None
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert sum(1 for ch in chunks if ch.choices[0].delta.content) <= 1


LONG = 8000  # tokens: with n_ctx 8192 the random tiny model would talk for a long while


def generation_stopped(control, settle: float = 1.0) -> bool:
    """No token generated for ``settle`` seconds: the tiny model makes hundreds a second when let."""
    before = control.tokens
    time.sleep(settle)
    return control.tokens == before


def test_a_stream_whose_client_leaves_is_cancelled_and_the_next_chat_is_served(stock_app, caplog):
    """The front end's Stop button closes the stream: the generation ends (whichever comes first, the
    guard's cancel at the next token or the stream's own task being cancelled), the model is free."""
    from llama_cpp.server import app as server_app

    control = server_app._llama_proxy(ALIAS).chat_handler.control
    guard = secure(stock_app, ServePolicy(api_key=KEY, alias=ALIAS, max_tokens=LONG))
    with caplog.at_level(logging.WARNING, logger="duet.serve"), serve_asgi(guard) as base:
        c = client(base)
        stream = c.chat.completions.create(model=ALIAS, messages=messages(), max_tokens=LONG, stream=True)
        got = [next(stream) for _ in range(5)]  # the role chunk and the first tokens, as they came
        assert any(ch.choices[0].delta.content for ch in got)
        stream.close()
        wait_for(lambda: guard.cancelled == 1, "the guard saw the client leave")
        assert generation_stopped(control)
        assert control.tokens < LONG // 2
        after = c.chat.completions.create(model=ALIAS, messages=messages(1), max_tokens=4)
    assert isinstance(after.choices[0].message.content, str)
    assert guard.cancelled == 1 and guard.served == 1
    messages_ = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(r"client 127\.0\.0\.1:\d+ closed the connection during its chat; ending the "
                            r"generation", m) for m in messages_), messages_
    assert all(n < LONG // 2 for n in cancelled_after(caplog))


def test_a_client_that_stops_reading_its_stream_loses_the_model(stock_app, caplog):
    """A stream waits on its client's socket: one that never reads would hold the model for ever. Past
    ``send_timeout`` the guard ends the generation, and the next chat is answered."""
    from llama_cpp.server import app as server_app

    control = server_app._llama_proxy(ALIAS).chat_handler.control
    guard = secure(stock_app, ServePolicy(api_key=KEY, alias=ALIAS, max_tokens=LONG, send_timeout=1.0))
    with caplog.at_level(logging.WARNING, logger="duet.serve"), serve_asgi(guard, sndbuf=4096) as base:
        host, port = base.removeprefix("http://").split(":")
        # min_tokens (llama-cpp-python's): no end-of-text before 4,000 tokens; 20 logprobs a token make each
        # chunk about 2 KB, so the buffers (8 KB in the kernel, 64 KB in uvicorn) fill within a few dozen
        data = json.dumps({"model": ALIAS, "messages": messages(), "max_tokens": LONG, "min_tokens": 4000,
                           "logprobs": True, "top_logprobs": 20, "stream": True}).encode()
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a small window, set before connecting
        reader.connect((host, int(port)))
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        reader.sendall(head.encode() + data)
        try:  # and never read: the server's buffers fill, then its sends wait
            wait_for(lambda: guard.stalled == 1, "the guard gave up on the client", limit=120)
            assert generation_stopped(control)
            assert control.tokens < LONG // 2
            t0 = time.monotonic()
            after = client(base).chat.completions.create(model=ALIAS, messages=messages(1), max_tokens=4)
            waited = time.monotonic() - t0
        finally:
            reader.close()
    assert isinstance(after.choices[0].message.content, str) and waited < 60
    messages_ = [r.getMessage() for r in caplog.records]
    said = r"client 127\.0\.0\.1:\d+ left its reply unread for 1 s; ending the generation"
    assert any(re.fullmatch(said, m) for m in messages_), messages_


def test_an_error_after_the_stream_began_is_an_error_event(guarded):
    """A prompt longer than the context fails inside the stream; OpenAI's client raises it as an API error."""
    base, _ = guarded
    too_long = messages(text="hello " * 9000)  # > n_ctx 8192 tokens
    with pytest.raises(openai.APIError) as e:
        list(client(base).chat.completions.create(model=ALIAS, messages=too_long, max_tokens=4, stream=True))
    assert "Prompt exceeds n_ctx" in e.value.message
    # the server is fine afterwards
    out = client(base).chat.completions.create(model=ALIAS, messages=messages(), max_tokens=2)
    assert isinstance(out.choices[0].message.content, str)


# ---- the real `duet serve` process -----------------------------------------------------------------
def test_duet_serve_names_its_model_and_streams(tiny_model, tmp_path):
    """The supervisor and its child: the default alias is the model file's stem; --alias overrides it."""
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
           "DUET_SERVE_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model),
                             "--mmproj", str(tiny_model.mmproj), "--port", "0", "--gpu-layers", "0",
                             "--n-ctx", "2048"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{listening_port(proc)}"
        c = client(base)
        deadline = time.monotonic() + 120
        while True:  # the child loads the model after the socket is listening
            try:
                names = [m.id for m in c.models.list()]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert names == [tiny_model.model.stem]
        chunks = list(c.chat.completions.create(model=names[0], messages=messages(), max_tokens=4,
                                                stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[0].model == names[0]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"serving {tiny_model.model.name} as '{tiny_model.model.stem}'" in err
    assert "Traceback" not in err


def test_the_default_name_is_the_library_name_or_the_file_stem(tmp_path, monkeypatch):
    from app.cli.serve import served_name

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))  # an empty library, beside the bundled demo
    assert served_name("tiny") == "tiny"
    assert served_name("demo") == "demo"
    assert served_name(str(tmp_path / "models" / "mmduet2-q4_k_m.gguf")) == "mmduet2-q4_k_m"
