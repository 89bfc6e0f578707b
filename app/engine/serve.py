"""Serving MMDuet2 to other machines with llama-cpp-python's OpenAI-compatible server.

llama-cpp-python's stock ``Qwen25VLChatHandler`` renders ``<|im_start|>assistant`` without the
newline the model was trained to see (Jinja trims a template's trailing newline), which measurably
changes its answers. :class:`MMDuet2ChatHandler` is that handler with the template fixed; ``duet
serve`` installs it into the stock server, so a remote Duet talks to exactly the trained prompt.
"""

from __future__ import annotations

from pathlib import Path

from llama_cpp.llama_chat_format import Qwen25VLChatHandler

from app.core import protocol


class MMDuet2ChatHandler(Qwen25VLChatHandler):
    DEFAULT_SYSTEM_MESSAGE = protocol.SYSTEM_PROMPT
    # The stock template with its final newline emitted by an expression, which Jinja does not trim.
    CHAT_FORMAT = Qwen25VLChatHandler.CHAT_FORMAT.removesuffix("<|im_start|>assistant\n") + (
        "<|im_start|>assistant{{ '\\n' }}")


def create_server_app(model: Path | str, mmproj: Path | str, n_ctx: int = 8192, n_gpu_layers: int = -1,
                      n_threads: int | None = None, alias: str = "mmduet2"):
    """The stock llama-cpp-python FastAPI app, with the MMDuet2 chat handler installed."""
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    settings = ModelSettings(model=str(model), clip_model_path=str(mmproj), chat_format="qwen2.5-vl",
                             n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, model_alias=alias, verbose=False,
                             **({"n_threads": n_threads} if n_threads else {}))
    app = server_app.create_app(server_settings=ServerSettings(), model_settings=[settings])
    llama = server_app._llama_proxy(alias)  # the stock proxy has no hook for a custom handler
    llama.chat_handler = MMDuet2ChatHandler(clip_model_path=str(mmproj), verbose=False)
    return app
