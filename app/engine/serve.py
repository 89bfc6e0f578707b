"""Serving MMDuet2 to other machines with llama-cpp-python's OpenAI-compatible server, safely.

llama-cpp-python's stock ``Qwen25VLChatHandler`` renders ``<|im_start|>assistant`` without the
newline the model was trained to see (Jinja trims a template's trailing newline), which measurably
changes its answers. :class:`MMDuet2ChatHandler` is that handler with the template fixed; ``duet
serve`` installs it into the stock server, so a remote Duet talks to exactly the trained prompt.

The stock server is built for a trusted desk, not a network: no key, CORS open to every origin with
credentials, and an ``image_url`` is fetched with ``urllib.urlopen`` — ``file:///`` reads any local
file, ``http://`` makes the server fetch any URL, a FIFO or a silent URL blocks it. :class:`ServeGuard`
is a plain ASGI layer in front of it that makes the defaults safe:

* every request needs the API key (``Authorization: Bearer …``); only the two routes Duet uses
  (``/v1/chat/completions``, ``/v1/models``) exist; no CORS unless origins are named;
* a request body is read with a size cap and a deadline (a client trickling bytes is cut off);
* images must be inline ``data:`` URLs, unless the user allowed a folder (files inside it, regular
  files only) or remote URLs (public addresses, plus networks named with ``--allow-url-net``; every
  redirect hop checked the same way); allowed ones are fetched *here*, with size and time limits
  covering the whole redirect chain, and passed on as data URLs, so the chat handler itself never
  opens a path or a URL (it refuses to);
* every image is checked for its pixel count before the model sees it (decompression bombs);
* ``/v1/models`` is answered by the guard itself, so it answers while a chat is running; chats are
  queued one at a time and a queued one gives up with HTTP 503 after ``queue_timeout`` seconds;
* replies are capped in tokens, and generation stops at ``generation_timeout`` seconds (a logits
  processor forces the end-of-text token), so no request holds the model indefinitely;
* a client that closes its connection gives the model back: a chat still queued is dropped, and one
  being generated is ended at its next token (:class:`GenerationControl`), so the next request is
  served at once instead of after a reply nobody will read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http.client
import io
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llama_cpp.llama_chat_format import Qwen25VLChatHandler

from app.core import protocol
from app.core.errors import InputError

log = logging.getLogger("duet.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ImageRefused(InputError):
    """An image reference the server's policy does not allow, or an image too large to accept."""


@dataclass(frozen=True)
class ServePolicy:
    """What ``duet serve`` accepts. The defaults are the safe ones (see the module docstring)."""

    api_key: str
    alias: str = "mmduet2"
    allow_files: Path | None = None  # a folder whose regular files may be named by path / file:// URL
    allow_urls: bool = False  # fetch http(s) image URLs (public addresses only, see url_address_allowed)
    url_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # non-public ones allowed too
    max_redirects: int = 3  # each hop checked like the first
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_images: int = 64
    max_tokens: int = 512
    body_timeout: float = 30.0  # seconds to receive a whole request body
    fetch_timeout: float = 10.0  # seconds to fetch one allowed URL / read one allowed file
    queue_timeout: float = 120.0  # seconds a chat may wait for the model before HTTP 503
    generation_timeout: float = 120.0  # seconds of token generation before the reply is ended


class GenerationControl:
    """Lets the guard end the generation in progress when its client has gone away.

    The guard runs one chat at a time, so one control serves the whole server: the guard calls
    :meth:`begin` when a chat gets the model and :meth:`cancel` when that chat's client disconnects;
    the chat handler's logits processor (in llama.cpp's worker thread) reads :meth:`stop_requested`
    before every token and counts them. Prompt evaluation (image encoding, prefill) cannot be
    interrupted in llama.cpp: a cancel takes effect at the first generated token.
    """

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.tokens = 0

    def begin(self) -> None:
        self._cancel.clear()
        self.tokens = 0

    def cancel(self) -> None:
        self._cancel.set()

    def stop_requested(self) -> bool:
        return self._cancel.is_set()


class MMDuet2ChatHandler(Qwen25VLChatHandler):
    DEFAULT_SYSTEM_MESSAGE = protocol.SYSTEM_PROMPT
    # The stock template with its final newline emitted by an expression, which Jinja does not trim.
    CHAT_FORMAT = Qwen25VLChatHandler.CHAT_FORMAT.removesuffix("<|im_start|>assistant\n") + (
        "<|im_start|>assistant{{ '\\n' }}")

    generation_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = GenerationControl()

    def load_image(self, image_url: str) -> bytes:
        """Inline data only: the guard has already turned every allowed file or URL into a data URL."""
        if not image_url.startswith("data:"):
            raise ImageRefused("only inline data: image URLs are accepted")
        return decode_data_url(image_url, 1 << 62)

    def __call__(self, **kwargs: Any) -> Any:
        """Generate, ending the reply (end-of-text forced) past the time limit or when cancelled."""
        from llama_cpp import LogitsProcessorList

        limit = self.generation_timeout
        deadline = time.monotonic() + limit if limit else None
        eos = kwargs["llama"].token_eos()
        control = self.control
        ended = False

        def stop_when_told(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            nonlocal ended
            if ended:  # already forced: the end-of-text token is being sampled
                return scores
            if control.stop_requested():
                log.warning("generation cancelled after %d tokens: the client went away", control.tokens)
            elif deadline is not None and time.monotonic() > deadline:
                log.warning("generation passed %.0f s; ending the reply", limit)
            else:
                control.tokens += 1
                return scores
            ended = True
            scores = np.full_like(scores, -np.inf)
            scores[eos] = 0.0
            return scores

        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), stop_when_told])
        return super().__call__(**kwargs)


# ---- API key -------------------------------------------------------------------------------------
def default_key_file() -> Path:
    env = os.environ.get("DUET_DATA_DIR")
    if env:
        return Path(env) / "serve-api-key"
    import platformdirs

    return Path(platformdirs.user_config_dir("duet")) / "serve-api-key"


def load_or_create_api_key(path: Path | None = None) -> tuple[str, bool]:
    """The stored key, or a new random one written 0600 (returns the key and whether it is new)."""
    path = path or default_key_file()
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 16:
            raise InputError(f"{path}: the API key must be at least 16 characters; delete the file to get a new one")
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key, True


# ---- images --------------------------------------------------------------------------------------
def decode_data_url(url: str, max_bytes: int) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise ImageRefused("a data: image URL must be base64 (data:image/png;base64,…)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageRefused(f"an image is larger than the server's limit of {max_bytes // 1024 // 1024} MB")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageRefused(f"a data: image URL is not valid base64 ({e})") from None


def check_image(data: bytes, policy: ServePolicy) -> None:
    """Refuse what is not an image, or one with more pixels than allowed (read from its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRefused(f"an image could not be read ({type(e).__name__})") from None
    if w * h > policy.max_image_pixels:
        raise ImageRefused(f"an image is {w}×{h} pixels; the server accepts at most {policy.max_image_pixels} pixels")


def _read_allowed_file(ref: str, policy: ServePolicy) -> bytes:
    if policy.allow_files is None:
        raise ImageRefused("local image paths are not allowed on this server (start it with --allow-files DIR); "
                           "send images inline as data: URLs")
    raw = urllib.parse.unquote(urllib.parse.urlparse(ref).path) if ref.startswith("file:") else ref
    root = policy.allow_files.resolve()
    try:
        path = (root / raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageRefused(f"{raw}: no such image file under the allowed folder") from None
    if not path.is_relative_to(root):
        raise ImageRefused(f"{raw}: outside the allowed folder {root}")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO, a device or a socket would block or never end
        raise ImageRefused(f"{raw}: not a regular file")
    if st.st_size > policy.max_image_bytes:
        raise ImageRefused(f"{raw}: {st.st_size} bytes; the server accepts at most {policy.max_image_bytes}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(policy.max_image_bytes + 1)[: policy.max_image_bytes]


REDIRECTS = (301, 302, 303, 307, 308)


def parse_networks(specs: list[str] | tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``--allow-url-net`` values → networks (a bare address is a one-address network)."""
    nets = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise InputError(f"--allow-url-net {spec}: not a network; give an address or CIDR such as "
                             "192.168.1.0/24 or 127.0.0.1") from None
    return tuple(nets)


def url_address_allowed(address: str, policy: ServePolicy) -> bool:
    """Whether the server may connect to ``address`` for an image URL.

    Public addresses are; loopback, private (RFC 1918, ULA), link-local (cloud metadata services at
    169.254.169.254), carrier-grade NAT, multicast and reserved ones are not, unless inside one of
    ``policy.url_networks`` (``--allow-url-net``): a client holding the key must not be able to make
    the server probe its own machine or network.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id (fe80::1%eth0) is not part of it
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in policy.url_networks):
        return True
    return ip.is_global and not ip.is_multicast


def _fetch_allowed_url(url: str, policy: ServePolicy) -> bytes:
    """Fetch an image URL, checking every redirect hop against the same policy.

    One deadline (``fetch_timeout``) and one size cap cover the whole chain, however many hops;
    at most ``max_redirects`` redirects are followed; each hop must be http(s) to an allowed
    address. The address checked is the address connected to (the name is resolved once per hop
    and the socket opened to that very address), so a name that resolves differently the second
    time cannot slip past the check.
    """
    if not policy.allow_urls:
        raise ImageRefused("remote image URLs are not allowed on this server (start it with --allow-urls); "
                           "send images inline as data: URLs")
    deadline = time.monotonic() + policy.fetch_timeout
    first = url
    for hop in range(policy.max_redirects + 1):
        where = url if hop == 0 else f"{first} (redirected to {url})"
        status, location, data = _get_once(url, where, policy, deadline)
        if status in REDIRECTS:
            if not location:
                raise ImageRefused(f"{where}: a redirect ({status}) without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise ImageRefused(f"{where}: answered HTTP {status}")
        return data
    raise ImageRefused(f"{first}: more than {policy.max_redirects} redirects; not followed further")


def _get_once(url: str, where: str, policy: ServePolicy, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET (no redirect following): (status, Location, body — read only for a 200)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRefused(f"{where}: scheme {scheme!r} is not fetched (http and https only)")
    try:
        host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
    except ValueError as e:  # a port that is not a number, or out of range
        raise ImageRefused(f"{where}: {e}") from None
    if not host:
        raise ImageRefused(f"{where}: no host")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ImageRefused(f"{where}: not fetched within {policy.fetch_timeout:g} s")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ImageRefused(f"{where}: could not be fetched ({e})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in addresses if url_address_allowed(a, policy)]
    if not allowed:
        shown = ", ".join(addresses)
        raise ImageRefused(f"{where}: {host} is {shown}, a loopback, private or otherwise non-public address; "
                           f"this server fetches only public addresses (start it with --allow-url-net "
                           f"{addresses[0].split('%')[0]}/{32 if ':' not in addresses[0] else 128} to allow it)")
    expired = threading.Event()
    sock: socket.socket | None = None

    def cut() -> None:  # the deadline covers the whole exchange: a server trickling bytes is cut off too
        expired.set()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(remaining, cut)
    watchdog.daemon = True
    watchdog.start()
    conn = None
    try:
        sock = socket.create_connection((allowed[0], port), timeout=remaining)
        if expired.is_set():
            raise TimeoutError
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        conn = (http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection)(host, port)
        conn.sock = sock  # pinned: the checked address, with the name in Host (and for TLS, SNI and the certificate)
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"User-Agent": "duet-serve", "Accept": "image/*"})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, resp.getheader("Location"), b""
        if (resp.length or 0) > policy.max_image_bytes:
            raise ImageRefused(f"{where}: {resp.length} bytes; the server accepts at most {policy.max_image_bytes}")
        chunks, size = [], 0
        while chunk := resp.read(65536):
            size += len(chunk)
            if size > policy.max_image_bytes:
                raise ImageRefused(f"{where}: larger than the server's limit of {policy.max_image_bytes} bytes")
            chunks.append(chunk)
        if expired.is_set():
            raise TimeoutError
        return 200, None, b"".join(chunks)
    except ImageRefused:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        if expired.is_set() or isinstance(e, TimeoutError):
            raise ImageRefused(f"{where}: not fetched within {policy.fetch_timeout:g} s") from None
        raise ImageRefused(f"{where}: could not be fetched ({e})") from None
    finally:
        watchdog.cancel()
        if conn is not None:
            conn.close()
        elif sock is not None:
            sock.close()


def resolve_image(ref: str, policy: ServePolicy) -> str:
    """An image reference → a checked inline data URL, or :class:`ImageRefused`."""
    scheme = urllib.parse.urlparse(ref).scheme.lower()
    if ref.startswith("data:"):
        data = decode_data_url(ref, policy.max_image_bytes)
    elif scheme in ("http", "https"):
        data = _fetch_allowed_url(ref, policy)
    elif scheme in ("file", ""):
        data = _read_allowed_file(ref, policy)
    else:
        raise ImageRefused(f"image URL scheme {scheme!r} is not accepted; send images inline as data: URLs")
    check_image(data, policy)
    return ref if ref.startswith("data:") else "data:image/png;base64," + base64.b64encode(data).decode()


def _image_slots(body: dict) -> list[tuple[dict, str]]:
    """Every (holder, key) where an image reference sits in an OpenAI chat request."""
    slots = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                iu = part.get("image_url")
                if isinstance(iu, dict):
                    slots.append((iu, "url"))
                else:
                    slots.append((part, "image_url"))
    return slots


def sanitize_chat(body: Any, policy: ServePolicy) -> dict:
    """Check and rewrite a chat request in place (images inline and checked, max_tokens capped)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ImageRefused("expected a JSON object with a 'messages' list")
    slots = _image_slots(body)
    if len(slots) > policy.max_images:
        raise ImageRefused(f"{len(slots)} images in one request; the server accepts at most {policy.max_images}")
    for holder, key in slots:
        ref = holder.get(key)
        if not isinstance(ref, str):
            raise ImageRefused("an image_url must be a string or {'url': string}")
        holder[key] = resolve_image(ref, policy)
    mt = body.get("max_tokens")
    if mt is None or not isinstance(mt, int) or isinstance(mt, bool) or mt > policy.max_tokens:
        body["max_tokens"] = policy.max_tokens
    if body.get("stream"):
        raise ImageRefused("streaming is not supported by duet serve; send stream: false")
    return body


# ---- the ASGI guard ------------------------------------------------------------------------------
async def _respond(send: Send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind}}


class ServeGuard:
    """ASGI middleware enforcing a :class:`ServePolicy` in front of llama-cpp-python's app."""

    ROUTES = {("POST", "/v1/chat/completions"), ("GET", "/v1/models")}

    def __init__(self, app: Callable[..., Awaitable[None]], policy: ServePolicy,
                 control: GenerationControl | None = None) -> None:
        self.app = app
        self.policy = policy
        self._model = asyncio.Semaphore(1)  # one chat on the model at a time; the rest wait, bounded
        self.control = control
        self.served = 0
        self.cancelled = 0  # chats whose client left while they were on the model
        self.waiting = 0  # chats queued for the model now

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and secrets.compare_digest(token.strip(), self.policy.api_key)
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
                                             "authentication_error"), [(b"www-authenticate", b"Bearer")])
            return
        if (method, path) not in self.ROUTES:
            await _respond(send, 404, _error(f"{method} {path}: not served here (only /v1/chat/completions "
                                             "and /v1/models)"))
            return
        if path == "/v1/models":
            await _respond(send, 200, {"object": "list", "data": [
                {"id": self.policy.alias, "object": "model", "owned_by": "duet", "permissions": []}]})
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
        state = {"on_model": False, "answered": False}

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
                await self.app(self._with_body(scope, body), self._replay(body, gone), self._sender(send, state))
                if not gone.is_set():
                    self.served += 1
            finally:
                self._model.release()
        finally:
            watcher.cancel()

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

    @staticmethod
    def _sender(send: Send, state: dict) -> Send:
        async def sender(message: dict) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                state["answered"] = True
            await send(message)

        return sender


class _TooLarge(Exception):
    pass


def create_server_app(model: Path | str, mmproj: Path | str, n_ctx: int = 8192, n_gpu_layers: int = -1,
                      n_threads: int | None = None, alias: str = "mmduet2", policy: ServePolicy | None = None):
    """The stock llama-cpp-python FastAPI app with the MMDuet2 chat handler, behind a :class:`ServeGuard`.

    The pair is validated before llama.cpp loads it (a mismatched pair would otherwise "serve" and
    fail every request with HTTP 500). Without ``policy`` the app is returned unguarded: only for
    in-process tests that talk to llama-cpp-python directly.
    """
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from app.modelhub.validate import check_pair

    check_pair(model, mmproj)
    settings = ModelSettings(model=str(model), clip_model_path=str(mmproj), chat_format="qwen2.5-vl",
                             n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, model_alias=alias, verbose=False,
                             **({"n_threads": n_threads} if n_threads else {}))
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
