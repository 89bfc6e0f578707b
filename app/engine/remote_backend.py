"""MMDuet2 over an OpenAI-compatible chat-completions server, for a GPU in another machine.

The server is stateless, so every step sends the whole dialogue: system prompt, each user turn as
its frames (PNG data URLs, lossless, so the server sees the very pixels the in-process engine would)
followed by its text, and the assistant turns so far. Decoding is greedy (temperature 0), as in the
paper. Only the standard library is used: the request is one JSON POST.

Nothing is sent anywhere unless the user configured this backend with a URL.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import cv2
import numpy as np

from app.core import protocol
from app.core.types import StepTimings
from app.engine.backend import BackendError, BackendStep

log = logging.getLogger("duet.remote")


def png_data_url(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise BackendError("could not encode a frame as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


class RemoteBackend:
    name = "remote"

    def __init__(self, base_url: str, model: str = "mmduet2", api_key_env: str = "DUET_API_KEY",
                 timeout: float = 120.0, retries: int = 2) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout, self.retries = timeout, retries
        self.device = f"remote: {base_url}"
        self.n_ctx = 0
        self._warned_talk = False
        self.reset(protocol.SYSTEM_PROMPT)

    def reset(self, system_prompt: str) -> None:
        self.messages: list[dict] = [{"role": "system", "content": system_prompt}]

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code < 500 and e.code != 429:
                    raise BackendError(f"{self.url} refused the request (HTTP {e.code}): {detail}") from e
                last = e
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = e
            time.sleep(min(4.0, 0.5 * 2 ** attempt))
        raise BackendError(f"{self.url} is not answering ({last}); is the server running?")

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
            usage = reply.get("usage") or {}
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{self.url} answered in an unexpected shape: {str(reply)[:200]}") from e
        silent = protocol.is_silence(out) or not out.strip()
        self.messages.append(user)
        self.messages.append({"role": "assistant",
                              "content": (protocol.MUST_REPLY_PREFIX if must_reply else "") + out})
        total = (time.perf_counter() - t0) * 1e3
        return BackendStep(text=protocol.NO_REPLY if silent and not out.strip() else out, silent=silent,
                           timings=StepTimings(total_ms=total), n_tokens=int(usage.get("prompt_tokens", 0)))

    def close(self) -> None:
        pass
