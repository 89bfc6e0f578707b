"""MMDuet2 over an OpenAI-compatible chat-completions server, for a GPU in another machine.

The server is stateless, so every step sends the whole dialogue: system prompt, each user turn as
its frames (PNG data URLs, lossless, so the server sees the very pixels the in-process engine would)
followed by its text, and the assistant turns so far. Decoding is greedy (temperature 0), as in the
paper. Only the standard library is used: the request is one JSON POST.

The model is named in every request. ``model=""`` asks the server which it serves (``GET /v1/models``, once,
when the backend is made): ``duet serve`` names its model after what it serves (``demo``, a library name)
and refuses requests naming another, so a client that guesses would be wrong more often than not.

Nothing is sent anywhere unless the user configured this backend with a URL.

Two clocks bound an exchange. The whole-request deadline (``timeout``, 120 s) allows a long prompt on
a slow server. The first-byte wait (``first_byte_timeout``, 10 s) is how long the backend waits for
the first byte of an answer before asking the server, on a second connection, whether it is alive
at all (``GET /v1/models``, which every OpenAI-compatible server answers at once, even mid-generation):
if that goes unanswered too, the server is hung and the step fails then, in seconds instead of at the
deadline; if it answers, the server is working on the step and the wait goes on, reported every few
seconds through ``on_status`` (and the log) so a live viewer sees it. A reply longer than the step's
``max_new_tokens`` could be (the server ignored ``max_tokens``) is cut to that length, and said so:
it would otherwise be printed, saved and re-sent with every later turn.

A password in the URL (``http://user:pass@host/v1``) is dropped when the backend is made: it is never
sent (the key goes in ``Authorization``) and so never appears in a message.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import select
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from app.core import protocol
from app.core.config import DEFAULT_MAX_NEW_TOKENS
from app.core.textsafe import terminal_safe, without_userinfo
from app.core.types import StepTimings
from app.engine.backend import BackendError, BackendStep
from app.engine.deadline import ExchangeDeadline

log = logging.getLogger("duet.remote")
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# The longest a reply of n tokens can reasonably be: Qwen2.5's tokens average ~4 characters of text and
# almost none exceeds 16, so n·16 characters never cuts a reply the model could have given.
MAX_CHARS_PER_TOKEN = 16
STATUS_EVERY = 5.0  # seconds between "still waiting" reports once the first-byte wait has passed


class _Refused(Exception):
    """An answer that retrying cannot fix (a redirect elsewhere, an oversized body)."""


class _Deadline(Exception):
    """The whole-request deadline passed."""


class _NoFirstByte(Exception):
    """Nothing came back within the first-byte wait, and the server did not answer a probe either."""


def _origin(url: str) -> str:
    """scheme://host:port, the unit a browser (and this backend) trusts with credentials."""
    p = urllib.parse.urlsplit(url)
    scheme = p.scheme.lower()
    return f"{scheme}://{(p.hostname or '').lower()}:{p.port or {'http': 80, 'https': 443}.get(scheme)}"


def png_data_url(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise BackendError("could not encode a frame as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


class RemoteBackend:
    name = "remote"

    def __init__(self, base_url: str, model: str = protocol.MODEL_NAME, api_key_env: str = "DUET_API_KEY",
                 timeout: float = 120.0, retries: int = 2, first_byte_timeout: float = 10.0,
                 on_status: Callable[[str], None] | None = None) -> None:
        """``model`` is the name sent with every request; ``""`` means the one the server lists.

        ``on_status`` receives, from the thread running the step, a sentence while an answer is awaited
        past ``first_byte_timeout`` (the controller or window shows it; ``duet run`` logs it).
        """
        base_url = without_userinfo(base_url).rstrip("/")  # never sent, so never printed
        self.url = base_url + "/chat/completions"
        self.models_url = base_url + "/models"
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout, self.retries = timeout, retries
        self.first_byte_timeout = min(first_byte_timeout, timeout)
        self.on_status = on_status
        self.device = f"remote: {base_url}"
        self.n_ctx = 0
        self._warned_talk = False
        self.extra_headers: dict[str, str] = {}  # sent with every request (vllm_remote.py: the session id)
        self.listing: Any = None  # the server's last answer to GET /models, if it was asked
        self.model = model or self._only_model()
        self.reset(protocol.SYSTEM_PROMPT)

    def served_models(self, retries: int | None = None) -> list[str]:
        """The model names the server lists (``GET /v1/models``); :class:`BackendError` if it cannot say."""
        listing = self._call(self.models_url, None, self.retries if retries is None else retries)
        self.listing = listing  # kept: which server this is (vllm_remote.is_vllm) needs no second request
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"{self.models_url} answered in an unexpected shape: "
                               f"{terminal_safe(str(listing)[:200])}")
        return [terminal_safe(str(m["id"])) for m in data if isinstance(m, dict) and "id" in m]

    def _only_model(self) -> str:
        names = self.served_models()
        if len(names) != 1:
            listed = ", ".join(repr(n) for n in names) or "none"
            raise BackendError(f"{self.models_url} lists {len(names)} models ({listed}); name the one to use "
                               "(--remote-model)")
        return names[0]

    def reset(self, system_prompt: str) -> None:
        self.messages: list[dict] = [{"role": "system", "content": system_prompt}]

    def _post(self, body: dict) -> Any:
        return self._call(self.url, json.dumps(body).encode(), self.retries)

    def _call(self, url: str, data: bytes | None, retries: int) -> Any:
        """POST ``data`` (GET when None) to ``url``, retried: the answer's JSON, or :class:`BackendError`."""
        last: Exception | None = None
        for attempt in range(retries + 1):
            try:
                status, payload = self._exchange(url, data)
            except _Refused as e:
                raise BackendError(str(e)) from None
            except _Deadline:
                raise BackendError(f"{url} gave no complete answer within {self.timeout:g} s "
                                   "(the whole-request deadline); is the server overloaded?") from None
            except _NoFirstByte as e:
                also = f", and does not answer GET {self.models_url} either" if data is not None else ""
                raise BackendError(f"{url} took the request but sent nothing back within {e.args[0]:g} s{also}: "
                                   "the server is hung or overloaded. Check (or restart) it, then start "
                                   "again.") from None
            except (OSError, http.client.HTTPException) as e:
                last = e
            else:
                if status == 200:
                    try:
                        return json.loads(payload)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise BackendError(
                            f"{url} answered with something that is not JSON "
                            f"({terminal_safe(payload[:80].decode('utf-8', 'replace'))!r}"
                            f"{'…' if len(payload) > 80 else ''}); "
                            "is it an OpenAI-compatible server?") from None
                detail = terminal_safe(payload[:300].decode("utf-8", "replace"))
                if status < 500 and status != 429:
                    raise BackendError(f"{url} refused the request (HTTP {status}): {detail}")
                last = RuntimeError(f"HTTP {status}: {detail}")
            if attempt < retries:
                time.sleep(min(4.0, 0.5 * 2 ** attempt))
        raise BackendError(f"{url} is not answering ({last}); is the server running?")

    def _exchange(self, url: str, data: bytes | None, hops: int = 0) -> tuple[int, bytes]:
        """One POST (a GET when ``data`` is None) with a whole-request deadline; same-origin redirects only.

        ``timeout`` bounds the *whole* exchange (connect, send, headers, body): a watchdog shuts the
        socket at the deadline, so a server that trickles one byte a second is given up on too (a
        socket timeout alone restarts with every byte). A redirect to another origin is refused,
        never followed: following it would send the API key and the user's frames elsewhere.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused(f"{url}: not an http(s) URL")
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        # The socket's own timeout is only a backstop: the watchdog below is the deadline that counts.
        conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout + 5)
        headers = {} if data is None else {"Content-Type": "application/json",
                                           "Content-Length": str(len(data))}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.extra_headers)
        with ExchangeDeadline(self.timeout, lambda: conn.sock) as deadline:
            try:
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                conn.request("GET" if data is None else "POST", path or "/", body=data, headers=headers)
                self._await_first_byte(conn, url, deadline.event(), probe=data is not None)
                resp = conn.getresponse()
                payload = resp.read(MAX_RESPONSE_BYTES + 1)
                if deadline.expired:  # the watchdog cut the answer short
                    raise _Deadline
                if resp.length:  # Content-Length promised more than arrived: the connection broke
                    raise http.client.IncompleteRead(payload, resp.length)
                if len(payload) > MAX_RESPONSE_BYTES:
                    raise _Refused(f"{url}: the answer is larger than {MAX_RESPONSE_BYTES // 1024 // 1024} MB")
                if resp.status in (301, 302, 303, 307, 308):
                    target = urllib.parse.urljoin(url, resp.getheader("Location") or "")
                    if _origin(target) != _origin(url):
                        raise _Refused(f"{url} redirected to another server ({_origin(target)}); refused so the API "
                                       "key and frames go nowhere else. Use the final URL with --remote if you trust it")
                    if hops >= 3 or resp.status not in (307, 308):
                        raise _Refused(f"{url} redirected ({resp.status}) to {target}; use that URL with --remote")
                    return self._exchange(target, data, hops + 1)
                return resp.status, payload
            except (OSError, http.client.HTTPException) as e:
                if deadline.expired:
                    raise _Deadline from None
                raise e
            finally:
                conn.close()

    def _await_first_byte(self, conn: http.client.HTTPConnection, url: str, expired: threading.Event,
                          probe: bool) -> None:
        """Return once the answer's first byte is there (or the watchdog closed the socket).

        Past ``first_byte_timeout``: a GET (the model list, answered at once by any live server) fails
        then; a chat asks the server whether it is alive (:meth:`_alive`) and fails if it is not, else
        waits on, saying so every :data:`STATUS_EVERY` seconds.
        """
        sock = conn.sock
        if sock is None:
            return
        start = time.monotonic()
        next_report = self.first_byte_timeout
        while not expired.is_set():
            ready, _, _ = select.select([sock], [], [], 0.25)
            if ready:
                return
            waited = time.monotonic() - start
            if waited < next_report:
                continue
            if next_report == self.first_byte_timeout and (not probe or not self._alive()):
                raise _NoFirstByte(self.first_byte_timeout)
            message = (f"waiting for {url}: no answer yet after {waited:.0f} s; the server answers, so it is "
                       f"working on this step (Duet waits up to {self.timeout:g} s)")
            # the first report of a step reaches `duet run`'s terminal (warnings do); the later ones the log
            log.log(logging.WARNING if next_report == self.first_byte_timeout else logging.INFO, "%s", message)
            if self.on_status is not None:
                self.on_status(message)
            next_report = waited + STATUS_EVERY

    def _alive(self) -> bool:
        """Whether the server answers anything (any HTTP status) to ``GET /models`` within the first-byte wait."""
        parts = urllib.parse.urlsplit(self.models_url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=max(1.0, min(self.first_byte_timeout, 5.0)))
        try:
            conn.request("GET", parts.path or "/", headers={"Authorization": f"Bearer {self.api_key}"}
                         if self.api_key else {})
            conn.getresponse().read(65536)
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> BackendStep:
        if talkativeness and not self._warned_talk:
            log.warning("talkativeness needs the first token's logits; a remote server ignores it")
            self._warned_talk = True
        t0 = time.perf_counter()
        content: list[dict] = [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
        if text:
            content.append({"type": "text", "text": text})
        user = {"role": "user", "content": content}
        messages = self.messages + [user]
        if must_reply:  # prefill the assistant turn, as docs/protocol.md §1.4: continue_final_message semantics
            messages = messages + [{"role": "assistant", "content": protocol.MUST_REPLY_PREFIX}]
        # Greedy with no repetition penalty, as the paper decodes; llama.cpp-based servers otherwise
        # default to repeat_penalty 1.1, which penalises the many "NO REPLY"s already in the context.
        reply = self._post({"model": self.model, "messages": messages, "temperature": 0.0, "top_k": 1,
                            "repeat_penalty": 1.0, "max_tokens": max_new_tokens, "stream": False})
        try:
            out = reply["choices"][0]["message"]["content"] or ""
            usage = reply.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            if not isinstance(out, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise BackendError(
                f"{self.url} answered in an unexpected shape: {terminal_safe(str(reply)[:200])}") from e
        out = terminal_safe(out)  # a reply is printed to terminals and shown in the UI: no escape sequences
        cap = max(1, max_new_tokens) * MAX_CHARS_PER_TOKEN
        if len(out) > cap:  # the server ignored max_tokens: a reply no step could give, re-sent every turn
            message = (f"{self.url} sent a reply of {len(out):,} characters, more than {max_new_tokens} tokens "
                       f"can be; it was cut to {cap:,} (the server ignores max_tokens?)")
            log.warning("%s", message)
            if self.on_status is not None:
                self.on_status(message)
            out = out[:cap].rstrip() + " …"
        silent = protocol.is_silence(out) or not out.strip()
        self.messages.append(user)
        self.messages.append({"role": "assistant",
                              "content": (protocol.MUST_REPLY_PREFIX if must_reply else "") + out})
        total = (time.perf_counter() - t0) * 1e3
        # The server re-reads the whole dialogue each request: its context holds the prompt's tokens.
        return BackendStep(text=protocol.NO_REPLY if silent and not out.strip() else out, silent=silent,
                           timings=StepTimings(total_ms=total), kv_cells=_int(usage.get("prompt_tokens", 0)))

    def close(self) -> None:
        pass
