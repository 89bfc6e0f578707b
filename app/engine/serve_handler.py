"""The model's side of ``duet serve``: the MMDuet2 chat handler, and how a chat in progress is ended.

Split from :mod:`app.engine.serve` (the ASGI guard): this is what runs in llama.cpp's worker thread.

llama-cpp-python's stock ``Qwen25VLChatHandler`` renders ``<|im_start|>assistant`` without the newline the
model was trained to see (Jinja trims a template's trailing newline), which measurably changes its answers.
:class:`MMDuet2ChatHandler` is that handler with the template fixed, and with two ways out of a chat that
nobody waits for any more (the guard's :class:`GenerationControl` says so):

* **during the prompt** — the stock handler evaluates a prompt chunk by chunk (runs of text, and each
  image: encoded by the vision tower, then decoded into the context). Before every image chunk it asks
  :class:`_CancellableMtmd`, which raises :class:`PromptCancelled` if the client has gone. One chunk
  itself cannot be interrupted (libmtmd has no abort hook), but the guard has resized every image to the
  frame budget first (:mod:`app.engine.serve_images`), so one chunk is one live-session frame's work;
* **during generation** — a logits processor forces the end-of-text token at the next token.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

import numpy as np
from llama_cpp.llama_chat_format import Qwen25VLChatHandler

from app.core import protocol
from app.engine.serve_policy import ImageRefused, decode_data_url

log = logging.getLogger("duet.serve")


class PromptCancelled(RuntimeError):
    """The chat was ended while its prompt (images included) was being evaluated."""

    MESSAGE = "the client went away while its prompt was evaluated"

    @staticmethod
    def quiet() -> None:
        """Stop llama-cpp-python printing a traceback for a chat whose client left during its prompt.

        Its route handler prints a traceback for every error that matches none of its message patterns
        (``RouteErrorHandler.pattern_and_formatters``, the library's own table for that), and a client leaving is
        not a fault of the server: the guard has already logged one line for it. The answer (499, nginx's "client
        closed request") goes to nobody: the guard drops what is sent after the client has gone.
        """
        import re

        from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler

        def gone(_body: Any, _match: Any) -> tuple[int, Any]:
            return 499, ErrorResponse(message=PromptCancelled.MESSAGE, type="client_closed_request", param=None, code=None)

        RouteErrorHandler.pattern_and_formatters.setdefault(re.compile(re.escape(PromptCancelled.MESSAGE)), gone)


class GenerationControl:
    """Lets the guard end the chat in progress when its client has gone away.

    The guard runs one chat at a time, so one control serves the whole server: the guard calls
    :meth:`begin` when a chat gets the model and :meth:`cancel` when that chat's client disconnects;
    the chat handler (in llama.cpp's worker thread) reads :meth:`stop_requested` before every prompt
    chunk and every generated token, and counts both (``chunks``, ``tokens``).
    """

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.tokens = 0
        self.chunks = 0  # prompt chunks (text runs and images) evaluated in the current chat

    def begin(self) -> None:
        self._cancel.clear()
        self.tokens = 0
        self.chunks = 0

    def cancel(self) -> None:
        self._cancel.set()

    def stop_requested(self) -> bool:
        return self._cancel.is_set()


class _CancellableMtmd:
    """The ``mtmd_cpp`` module as the stock handler calls it, with a check before each image chunk.

    The stock ``__call__`` keeps no hook between chunks; it calls ``self._mtmd_cpp.<function>`` for
    everything, so this proxy passes every attribute through and wraps the one that evaluates an
    image chunk. Raising there unwinds through the stock code's ``finally`` blocks (chunks and
    bitmaps freed), and the next chat starts from a reset context as every chat does.
    """

    def __init__(self, module: Any, handler: MMDuet2ChatHandler) -> None:
        self._module = module
        self._handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def mtmd_helper_eval_chunk_single(self, *args: Any) -> int:
        self._handler.check_prompt()
        result = self._module.mtmd_helper_eval_chunk_single(*args)
        self._handler.control.chunks += 1
        return result


class MMDuet2ChatHandler(Qwen25VLChatHandler):
    DEFAULT_SYSTEM_MESSAGE = protocol.SYSTEM_PROMPT
    # The stock template, with two changes. Its final newline is emitted by an expression, which Jinja does
    # not trim. And a chat that ends with an assistant message is *continued*, not closed: that message is the
    # start of the reply (the protocol's "I must reply." prefill, docs/protocol.md §1.4; what vLLM calls
    # continue_final_message), so it gets no <|im_end|> and no new assistant header after it.
    CHAT_FORMAT = (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
        "{{ self.DEFAULT_SYSTEM_MESSAGE }}<|im_end|>\n{% endif %}"
        "{% if loop.last and message['role'] == 'assistant' and message['content'] is string %}"
        "<|im_start|>assistant{{ '\\n' }}{{ message['content'] }}"
        "{% else %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image_url' %}"
        "{% if content.image_url is string %}{{ content.image_url }}{% else %}{{ content.image_url.url }}{% endif %}"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endif %}{% endif %}{% endfor %}"
        "{% if messages[-1]['role'] != 'assistant' %}<|im_start|>assistant{{ '\\n' }}{% endif %}")

    generation_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = GenerationControl()
        self._mtmd_cpp = _CancellableMtmd(self._mtmd_cpp, self)
        PromptCancelled.quiet()

    def check_prompt(self) -> None:
        """Raise :class:`PromptCancelled` if the chat's client has left (called before each image chunk).

        Only a client leaving (or timing out, which closes its connection) ends a prompt: the time limit is
        the generation's, and a prompt is bounded anyway (``max_images`` images at ``tokens_per_image``).
        """
        if self.control.stop_requested():
            log.warning("chat cancelled during its prompt, after %d chunks: the client went away", self.control.chunks)
            raise PromptCancelled(PromptCancelled.MESSAGE)

    def load_image(self, image_url: str) -> bytes:
        """Inline data only: the guard has already turned every allowed file or URL into a data URL."""
        if not image_url.startswith("data:"):
            raise ImageRefused("only inline data: image URLs are accepted")
        data = decode_data_url(image_url, 1 << 62)
        if log.isEnabledFor(logging.DEBUG):  # what reaches the vision encoder (tests read it)
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                log.debug("image to the encoder: %d×%d px", *im.size)
        return data

    def __call__(self, **kwargs: Any) -> Any:
        """Evaluate and generate, ending the chat when cancelled or past the time limit (module docstring)."""
        from llama_cpp import LogitsProcessorList

        limit = self.generation_timeout
        deadline = time.monotonic() + limit if limit else None
        self.check_prompt()  # a chat cancelled while its images were being read never starts
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
