"""The remote backend as vLLM's OpenAI server wants to be spoken to: prefix-cache friendly, sticky, decided early.

:class:`VllmRemoteBackend` is :class:`RemoteBackend` (the same dialogue, frames as PNG data URLs, greedy decoding)
with what serving many viewers from one vLLM needs:

* **An append-only conversation.** Each step sends the dialogue so far plus the new user turn, never an edited
  history: the one stable system prompt (``protocol.SYSTEM_PROMPT``) first, then each turn as the protocol lays it
  out (docs/protocol.md §1.3: the turn's frames, then its text), and each assistant turn byte for byte as it was
  said (a silent turn as ``NO REPLY``). vLLM's prefix cache (image-hash aware: the same PNG bytes give the same
  hash) then finds everything but the new turn already computed.
* **A session id** per viewer's stream (one per backend, kept across :meth:`reset`), sent as the ``x-session-id``
  header and as OpenAI's ``user`` field. Routers in front of several vLLM servers keep a session on one server,
  where its prefix is cached: the production stack's router with ``--routing-logic session --session-key
  x-session-id``, vllm-router's ``consistent_hash`` policy (which reads ``X-Session-ID`` first).
* **NO REPLY decided from the first token**, as the local engine does (app/engine/llama_backend.py): the first
  request asks for one token (``max_tokens: 1``) with its top logprobs. When that token is the start of ``NO
  REPLY`` (or the end of the turn), the step is silent and nothing more is decoded; otherwise a second request
  continues the assistant turn from that token (vLLM's ``continue_final_message``), which the prefix cache makes
  cost only the new tokens. vLLM has no way to stop a generation on a condition of its first token within one
  request (a logits processor would have to be loaded into the server), hence the two requests for a reply;
  most steps of a proactive stream are silent, and those cost one request of one token.
* A forced turn (``I must reply.``) prefills the assistant turn with ``continue_final_message`` and no new
  generation prompt, as vLLM needs it said (llama-cpp-python's handler continues a trailing assistant turn by
  itself).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from app.core import protocol
from app.engine.backend import BackendError
from app.engine.remote_backend import RemoteBackend

SESSION_HEADER = "x-session-id"
TOP_LOGPROBS = 5


def is_quiet_token(token: str) -> bool:
    """Whether a first token means silence, as the local engine's quiet tokens do: the first token of ``NO REPLY``
    (any beginning of it), or the end of the turn (an empty text, or the end token's own name in logprobs).
    Whitespace speaks: a model that starts with a space or a tab is replying."""
    return token in ("", protocol.IM_END, protocol.ENDOFTEXT) or protocol.NO_REPLY.startswith(token)


def first_token_margin(choice: dict) -> float | None:
    """Best speaking minus best quiet logprob among the first token's top alternatives (> 0: it speaks), as the
    local engine's ``first_token_margin``; None when the top few hold no token of one of the two kinds."""
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
        pairs = [(str(t["token"]), float(t["logprob"])) for t in top]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    quiet = [lp for tok, lp in pairs if is_quiet_token(tok)]
    speak = [lp for tok, lp in pairs if not is_quiet_token(tok)]
    if not quiet or not speak or not all(map(math.isfinite, quiet + speak)):
        return None
    return max(speak) - max(quiet)


class VllmRemoteBackend(RemoteBackend):
    """:class:`RemoteBackend` for a vLLM server (module docstring); ``session_id`` defaults to a new random one."""

    name = "remote-vllm"

    def __init__(self, base_url: str, model: str = "", *, session_id: str | None = None, **kw: Any) -> None:
        self.session_id = session_id or uuid.uuid4().hex
        super().__init__(base_url, model=model, **kw)
        self.extra_headers = {SESSION_HEADER: self.session_id}
        self.requests = 0  # chat requests sent: one per silent step, two per reply
        self.last_margin: float | None = None

    def _post(self, body: dict) -> Any:
        """One step's completion, decided from the first token (module docstring); the answer has the shape of
        a plain chat completion, so :meth:`RemoteBackend.step` reads it as it reads any server's."""
        body = {**body, "user": self.session_id}
        body.pop("top_k", None), body.pop("repeat_penalty", None)  # llama.cpp's names; vLLM's defaults are greedy
        messages = body["messages"]
        if messages[-1]["role"] == "assistant":  # a forced turn: continue the prefilled reply
            self.last_margin = None
            return self._send({**body, "continue_final_message": True, "add_generation_prompt": False})
        limit = int(body.get("max_tokens") or 1)
        first = self._send({**body, "max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS})
        choice = first["choices"][0]
        token = choice["message"]["content"] or ""
        self.last_margin = first_token_margin(choice)
        ended = choice.get("finish_reason") != "length"  # the end-of-turn token (or a stop): nothing said
        if ended or limit <= 1 or (token and protocol.NO_REPLY.startswith(token)):
            if token and protocol.NO_REPLY.startswith(token):
                choice["message"]["content"] = protocol.NO_REPLY  # what greedy decoding goes on to say
            return first
        # An empty text with finish "length" is a token vLLM holds back (part of a UTF-8 character): nothing is
        # kept, so the continuation generates it again, with the whole budget.
        limit -= 1 if token else 0
        rest = self._send({**body, "max_tokens": limit, "continue_final_message": True,
                           "add_generation_prompt": False,
                           "messages": [*messages, {"role": "assistant", "content": token}]})
        rest["choices"][0]["message"]["content"] = token + (rest["choices"][0]["message"]["content"] or "")
        return rest

    def _send(self, body: dict) -> Any:
        self.requests += 1
        return super()._post(body)


def is_vllm(backend: RemoteBackend) -> bool:
    """Whether the server behind ``backend`` is vLLM: its model list says ``owned_by: vllm``. A server that lists
    nothing is taken as not vLLM (its first step then says what is wrong, as before)."""
    listing = backend.listing
    if listing is None:  # the model was named, so the server was not asked yet
        try:
            listing = backend._call(backend.models_url, None, 0)
        except BackendError:
            return False
    data = listing.get("data") if isinstance(listing, dict) else None
    return isinstance(data, list) and any(isinstance(m, dict) and m.get("owned_by") == "vllm" for m in data)


def remote_backend(base_url: str, model: str = "", **kw: Any) -> RemoteBackend:
    """The backend for ``base_url``: :class:`VllmRemoteBackend` when the server is vLLM, else a plain
    :class:`RemoteBackend` (``duet serve``, llama.cpp's server, any other OpenAI-compatible one)."""
    plain = RemoteBackend(base_url, model=model, **kw)
    if not is_vllm(plain):
        return plain
    return VllmRemoteBackend(base_url, model=plain.model, **kw)
