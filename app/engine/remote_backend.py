"""MMDuet2 over an OpenAI-compatible chat-completions server, for a GPU in another machine.

The server is stateless, so every step sends the whole dialogue: system prompt, each user turn as
its frames (PNG data URLs, lossless, so the server sees the very pixels the in-process engine would)
followed by its text, and the assistant turns so far. Decoding is greedy (temperature 0), as in the
paper. Only the standard library is used: the request is one JSON POST.

The model is named in every request. ``model=""`` asks the server which it serves (``GET /v1/models``, once,
when the backend is made): ``duet serve`` names its model after what it serves (``demo``, a library name)
and refuses requests naming another, so a client that guesses would be wrong more often than not.

Nothing is sent anywhere unless the user configured this backend with a URL.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from app.core import protocol
from app.core.textsafe import terminal_safe
from app.core.types import StepTimings
from app.engine.backend import BackendError, BackendStep

log = logging.getLogger("duet.remote")
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class _Refused(Exception):
    """An answer that retrying cannot fix (a redirect elsewhere, an oversized body)."""


class _Deadline(Exception):
    """The whole-request deadline passed."""


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

    def __init__(self, base_url: str, model: str = "mmduet2", api_key_env: str = "DUET_API_KEY",
                 timeout: float = 120.0, retries: int = 2) -> None:
        """``model`` is the name sent with every request; ``""`` means the one the server lists."""
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.models_url = base_url.rstrip("/") + "/models"
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout, self.retries = timeout, retries
        self.device = f"remote: {base_url}"
        self.n_ctx = 0
        self._warned_talk = False
        self.model = model or self._only_model()
        self.reset(protocol.SYSTEM_PROMPT)

    def served_models(self, retries: int | None = None) -> list[str]:
        """The model names the server lists (``GET /v1/models``); :class:`BackendError` if it cannot say."""
        listing = self._call(self.models_url, None, self.retries if retries is None else retries)
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
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(self.timeout, kill)
        watchdog.daemon = True
        watchdog.start()
        headers = {} if data is None else {"Content-Type": "application/json",
                                           "Content-Length": str(len(data))}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET" if data is None else "POST", path or "/", body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read(MAX_RESPONSE_BYTES + 1)
            if expired.is_set():  # the watchdog cut the answer short
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
            if expired.is_set():
                raise _Deadline from None
            raise e
        finally:
            watchdog.cancel()
            conn.close()

    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = 128) -> BackendStep:
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
