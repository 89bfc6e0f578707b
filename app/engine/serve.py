"""Serving MMDuet2 to other machines with llama-cpp-python's OpenAI-compatible server, safely.

``duet serve`` installs :class:`MMDuet2ChatHandler` (:mod:`app.engine.serve_handler`: the stock Qwen2.5-VL
handler with the trained prompt's newline, and ways to end a chat nobody waits for) into the stock server.

The stock server is built for a trusted desk, not a network: no key, CORS open to every origin with
credentials, and an ``image_url`` is fetched with ``urllib.urlopen`` — ``file:///`` reads any local
file, ``http://`` makes the server fetch any URL, a FIFO or a silent URL blocks it. :class:`ServeGuard`
is a plain ASGI layer in front of it that makes the defaults safe:

* before a request reaches the guard, the connection does (:mod:`app.engine.serve_conn`): its headers must
  arrive within ``header_timeout`` seconds of the accept, and connections still sending headers are
  limited per client address, the oldest closed first, so sockets that never finish a request (slowloris)
  cannot crowd out a client holding the key;
* every request needs the API key (``Authorization: Bearer …``), checked as soon as its headers are in:
  a stranger gets a 401 and the connection closed, before any body is read or any work done; only the
  routes OpenAI chat clients use (``/v1/chat/completions``, ``/v1/models`` and ``/v1/models/NAME``)
  exist; no CORS unless origins are named;
* the served model has one name, the alias (``duet serve`` defaults it to the model's own name: ``demo``, a
  library name, a file's stem): ``/v1/models`` lists it, a chat naming another model gets OpenAI's 404
  ``model_not_found`` (a client set up for another model learns so, rather than being answered by this one),
  and a chat naming none is answered as the alias (never as the server's file path, which llama-cpp-python
  would otherwise put in the reply);
* a request body is read with a size cap and a deadline (a client trickling bytes is cut off);
* images must be inline ``data:`` URLs, unless the user allowed a folder (files inside it, regular
  files only) or remote URLs (public addresses, plus networks named with ``--allow-url-net``; every
  redirect hop checked the same way); allowed ones are fetched *here*, with size and time limits
  covering the whole redirect chain, and passed on as data URLs, so the chat handler itself never
  opens a path or a URL (it refuses to);
* every image is checked for its pixel count before the model sees it (decompression bombs), and one
  larger than the frame budget (``tokens_per_image``, the live session's 128 tokens by default) is
  resized to it here, one image at a time (:mod:`app.engine.serve_images`), so no request makes the
  vision encoder work on thousands of tokens;
* ``/v1/models`` is answered by the guard itself, so it answers while a chat is running; chats are
  queued one at a time (at most ``max_queued`` waiting; more get HTTP 503 at once) and a queued one gives
  up with HTTP 503 after ``queue_timeout`` seconds;
* replies are capped in tokens, and generation stops at ``generation_timeout`` seconds (a logits
  processor forces the end-of-text token), so no request holds the model indefinitely;
* a client that closes its connection gives the model back: a chat still queued is dropped, one whose
  prompt is being evaluated is ended before its next image, and one being generated at its next token
  (:class:`GenerationControl`), so the next request is served at once instead of after a reply nobody
  will read;
* ``stream: true`` (what chat front ends send by default) is answered with the stock server's
  server-sent events (``chat.completion.chunk`` objects, then ``data: [DONE]``) under all the limits
  above; the stream holds the model until it ends, and a client that stops reading it (every piece must
  be taken within ``send_timeout``) is treated as gone, so it cannot hold the model by never reading. An
  error after the stream began is sent as a last ``data: {"error": …}`` event, which OpenAI's clients
  raise as an API error, instead of a connection cut without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.engine.serve_handler import GenerationControl, MMDuet2ChatHandler, PromptCancelled  # noqa: F401
from app.engine.serve_policy import (  # noqa: F401 - re-exported: callers and tests import them from here
    ImageRefused,
    ServePolicy,
    _image_slots,
    check_api_key,
    check_image,
    decode_data_url,
    default_key_file,
    load_or_create_api_key,
    parse_networks,
    resolve_image,
    sanitize_chat,
    url_address_allowed,
)

log = logging.getLogger("duet.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


# ---- the ASGI guard ------------------------------------------------------------------------------
async def _respond(send: Send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, kind: str = "invalid_request_error", code: str | None = None,
           param: str | None = None) -> dict:
    """OpenAI's error shape: clients read ``message`` and branch on ``code`` (e.g. ``model_not_found``)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _innermost(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap what the stream's tasks raised)."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


class _ClientStalled(Exception):
    """The client left a piece of its reply unread for ``send_timeout`` seconds."""


class ServeGuard:
    """ASGI middleware enforcing a :class:`ServePolicy` in front of llama-cpp-python's app."""

    ROUTES = {("POST", "/v1/chat/completions"), ("GET", "/v1/models")}
    MODEL_ROUTE = "/v1/models/"  # GET /v1/models/NAME: one model (``client.models.retrieve``)

    def __init__(self, app: Callable[..., Awaitable[None]], policy: ServePolicy,
                 control: GenerationControl | None = None) -> None:
        self.app = app
        self.policy = policy
        self._model = asyncio.Semaphore(1)  # one chat on the model at a time; the rest wait, bounded
        self.control = control
        self.served = 0
        self.cancelled = 0  # chats whose client left while they were on the model
        self.waiting = 0  # chats queued for the model now
        self.stalled = 0  # chats whose client stopped reading its reply
        self.refused = 0  # requests without the key (answered 401, connection closed)
        self.created = int(time.time())  # the served model's "created", as OpenAI's model objects carry one

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                # As bytes: compare_digest refuses non-ASCII str, and a header of any bytes must be a 401, not a 500.
                return scheme.lower() == "bearer" and secrets.compare_digest(
                    token.strip().encode("latin-1"), self.policy.api_key.encode("utf-8"))
        return False

    async def _read_body(self, receive: Receive, scope: Scope) -> bytes:
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.policy.max_body_bytes:
                raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.policy.body_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            msg = await asyncio.wait_for(receive(), remaining)
            if msg["type"] == "http.disconnect":
                raise ConnectionError
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.policy.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if not self._authorized(scope):
            await _respond(send, 401, _error("missing or wrong API key (send 'Authorization: Bearer KEY')",
                                             "authentication_error"),
                           [(b"www-authenticate", b"Bearer"), (b"connection", b"close")])
            self.refused += 1  # a stranger costs a 401 and nothing else: no body read, no keep-alive
            return
        if method == "GET" and path.startswith(self.MODEL_ROUTE):
            name = urllib.parse.unquote(path.removeprefix(self.MODEL_ROUTE))
            if name == self.policy.alias:
                await _respond(send, 200, self._model_object())
            else:
                await _respond(send, 404, self._unknown_model(name))
            return
        if (method, path) not in self.ROUTES:
            await _respond(send, 404, _error(f"{method} {path}: not served here (only /v1/chat/completions "
                                             "and /v1/models)"))
            return
        if path == "/v1/models":
            await _respond(send, 200, {"object": "list", "data": [self._model_object()]})
            return
        try:
            raw = await self._read_body(receive, scope)
        except _TooLarge:
            await _respond(send, 413, _error(f"request body over the server's limit of "
                                             f"{self.policy.max_body_bytes // 1024 // 1024} MB"))
            return
        except (TimeoutError, asyncio.TimeoutError):
            await _respond(send, 408, _error(f"request body not received within {self.policy.body_timeout:g} s"))
            return
        except ConnectionError:
            return
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            await _respond(send, 400, _error(f"request body is not JSON ({e})"))
            return
        except RecursionError:  # a body of 100,000 nested arrays: Python's parser gives up, the server must not
            await _respond(send, 400, _error("request body is nested too deeply"))
            return
        if not isinstance(body, dict):
            await _respond(send, 400, _error("request body must be a JSON object with a 'messages' list"))
            return
        if isinstance(body, dict):
            model = body.get("model")
            if model is None:
                body["model"] = self.policy.alias  # else the reply would name the server's model file
            elif model != self.policy.alias:
                if isinstance(model, str):
                    await _respond(send, 404, self._unknown_model(model))
                else:
                    await _respond(send, 400, _error("'model' must be a string", param="model"))
                return
        try:
            body = await asyncio.wait_for(asyncio.to_thread(sanitize_chat, body, self.policy),
                                          self.policy.fetch_timeout * max(1, len(_image_slots(body) or [0])) + 5)
        except ImageRefused as e:
            await _respond(send, 400, _error(str(e)))
            return
        except (TimeoutError, asyncio.TimeoutError):
            await _respond(send, 408, _error("the request's images could not be read in time"))
            return
        await self._run_chat(scope, receive, send, json.dumps(body).encode())

    async def _run_chat(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """Queue for the model, then hand the rewritten request to the app; give up when the client does.

        After the body, the client's next ASGI message can only be ``http.disconnect``, so a watcher
        waits for it: a chat still queued is dropped; one on the model has its generation ended
        (:class:`GenerationControl`), so the model is free for the next request.
        """
        host, port = scope.get("client") or ("?", "?")
        client = f"{host}:{port}"
        gone = asyncio.Event()
        state: dict[str, Any] = {"on_model": False, "started": False, "sse": False, "answered": False,
                                 "closing": None}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if state["answered"]:  # uvicorn reports the end of a finished exchange the same way
                return
            gone.set()
            if state["on_model"]:
                self.cancelled += 1
                log.warning("client %s closed the connection during its chat; ending the generation", client)
                if self.control is not None:
                    self.control.cancel()
            else:
                log.warning("client %s closed the connection while queued; its chat is dropped", client)

        if self.waiting >= self.policy.max_queued:  # keyed clients too are bounded: uvicorn's cap counted strangers
            await _respond(send, 503, _error(f"the model is busy and {self.waiting} chats are waiting for it; "
                                             "try again later", "server_busy"), [(b"retry-after", b"5")])
            return
        watcher = asyncio.ensure_future(watch())
        try:
            if not await self._acquire(gone):
                if not gone.is_set():
                    await _respond(send, 503, _error(
                        f"the model is busy; no turn within {self.policy.queue_timeout:g} s", "server_busy"),
                        [(b"retry-after", b"5")])
                return
            try:
                state["on_model"] = True
                if self.control is not None:
                    self.control.begin()
                sender = self._sender(send, state, gone, client)
                try:
                    await self.app(self._with_body(scope, body), self._replay(body, gone), sender)
                except Exception as e:  # whatever ended the app, the client is told in words
                    await self._failed(sender, state, gone, _innermost(e))
                if state["closing"] is not None and not gone.is_set():
                    with contextlib.suppress(_ClientStalled):
                        await sender(state["closing"], final=True)
                if not gone.is_set():
                    self.served += 1
            finally:
                self._model.release()
        finally:
            watcher.cancel()

    async def _failed(self, sender: Callable[..., Awaitable[None]], state: dict, gone: asyncio.Event,
                      exc: BaseException) -> None:
        """Tell the client that its chat failed: a 500 if nothing was sent yet, else a last SSE error event.

        The stock server turns errors into HTTP errors itself, except those raised once a stream has
        begun: the stream would just end, without ``[DONE]`` and without a word. OpenAI's clients raise
        a ``data: {"error": …}`` event as an API error, so that is sent before the stream's end.
        """
        if isinstance(exc, _ClientStalled) or gone.is_set():
            return  # nobody is reading
        log.warning("chat failed: %s: %s", type(exc).__name__, exc)
        message = f"the chat failed on the server: {type(exc).__name__}: {exc}"
        with contextlib.suppress(_ClientStalled):
            if not state["started"]:
                body = json.dumps(_error(message, "server_error")).encode()
                await sender({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await sender({"type": "http.response.body", "body": body}, final=True)
            elif state["sse"] and not state["answered"]:
                event = b"data: " + json.dumps(_error(message, "server_error")).encode() + b"\n\n"
                await sender({"type": "http.response.body", "body": event, "more_body": True})
                if state["closing"] is None:
                    state["closing"] = {"type": "http.response.body", "body": b"", "more_body": False}

    def _model_object(self) -> dict:
        return {"id": self.policy.alias, "object": "model", "created": self.created, "owned_by": "duet",
                "permissions": []}

    def _unknown_model(self, name: str) -> dict:
        return _error(f"The model '{name}' does not exist on this server; it serves '{self.policy.alias}' "
                      "(GET /v1/models lists it)", code="model_not_found", param="model")

    async def _acquire(self, gone: asyncio.Event) -> bool:
        """The model, or False when the queue timeout passes or the client leaves first."""
        got = asyncio.ensure_future(self._model.acquire())
        left = asyncio.ensure_future(gone.wait())
        self.waiting += 1
        try:
            await asyncio.wait({got, left}, timeout=self.policy.queue_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
        left.cancel()
        if not got.done():
            got.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await got
        acquired = got.done() and not got.cancelled()
        if acquired and gone.is_set():
            self._model.release()
            return False
        return acquired

    @staticmethod
    def _with_body(scope: Scope, body: bytes) -> Scope:
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
            (b"content-length", str(len(body)).encode())]
        return scope

    @staticmethod
    def _replay(body: bytes, gone: asyncio.Event) -> Receive:
        """The app's receive: the rewritten body, then ``http.disconnect`` once the watcher saw one."""
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        return receive

    def _sender(self, send: Send, state: dict, gone: asyncio.Event,
                client: str) -> Callable[..., Awaitable[None]]:
        """The app's send: records how far the answer got, and gives up on a client that stops reading.

        A send waits while the client's socket buffers are full; a stream whose client never reads would
        hold the model for ever (generation waits on the send, so the generation time limit never comes).
        Past ``send_timeout`` the client is treated as gone: the generation is ended like a disconnect's.
        A stream's closing message is held back (``state["closing"]``) until the app has returned: an
        error it raises at the end still has to reach the client before the stream ends.
        """
        async def sender(message: dict, final: bool = False) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["sse"] = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                                   for k, v in message.get("headers") or [])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                if state["sse"] and not final:
                    state["closing"] = message
                    return
                state["answered"] = True
            try:
                await asyncio.wait_for(send(message), self.policy.send_timeout)
            except (TimeoutError, asyncio.TimeoutError):
                self.stalled += 1
                log.warning("client %s left its reply unread for %g s; ending the generation", client,
                            self.policy.send_timeout)
                gone.set()
                if self.control is not None:
                    self.control.cancel()
                raise _ClientStalled from None

        return sender


class _TooLarge(Exception):
    pass


def create_server_app(model: Path | str, mmproj: Path | str, n_ctx: int = 8192, n_gpu_layers: int = -1,
                      n_threads: int | None = None, alias: str = ServePolicy.alias, policy: ServePolicy | None = None):
    """The stock llama-cpp-python FastAPI app with the MMDuet2 chat handler, behind a :class:`ServeGuard`.

    The pair is validated before llama.cpp loads it (a mismatched pair would otherwise "serve" and
    fail every request with HTTP 500). Without ``policy`` the app is returned unguarded: only for
    in-process tests that talk to llama-cpp-python directly.
    """
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from app.modelhub.llama_lib import load_backends
    from app.modelhub.validate import check_pair

    check_pair(model, mmproj)
    load_backends()  # the portable build registers no backend by itself (app/modelhub/llama_lib.py)
    settings = ModelSettings(model=str(model), clip_model_path=str(mmproj), chat_format="qwen2.5-vl",
                             n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, model_alias=alias, verbose=False,
                             # both: else prompts are evaluated on every core, whatever n_threads is
                             **({"n_threads": n_threads, "n_threads_batch": n_threads} if n_threads else {}))
    app = server_app.create_app(server_settings=ServerSettings(api_key=policy.api_key if policy else None),
                                model_settings=[settings])
    llama = server_app._llama_proxy(alias)  # the stock proxy has no hook for a custom handler
    handler = MMDuet2ChatHandler(clip_model_path=str(mmproj), verbose=False)
    llama.chat_handler = handler
    app.state.duet_control = handler.control  # found by secure(): the guard cancels through it
    if policy is None:
        return app
    handler.generation_timeout = policy.generation_timeout
    return secure(app, policy)


def secure(app: Any, policy: ServePolicy) -> Any:
    """``app`` (the stock server) behind a :class:`ServeGuard`, with CORS only for the named origins.

    The stock app allows every origin with credentials; that middleware is removed. Allowed origins
    get CORS outside the guard, so its own answers (401, /v1/models) carry the headers too. An app
    made by :func:`create_server_app` carries its handler's :class:`GenerationControl`, so a chat
    whose client disconnects is cancelled.
    """
    from starlette.middleware.cors import CORSMiddleware

    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.middleware_stack = None  # rebuilt from user_middleware on the next request
    state = getattr(app, "state", None)
    guarded = ServeGuard(app, policy, getattr(state, "duet_control", None))
    if policy.cors_origins:
        return CORSMiddleware(guarded, allow_origins=list(policy.cors_origins), allow_credentials=False,
                              allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    return guarded
