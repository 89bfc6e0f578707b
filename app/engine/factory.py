"""``make_backend``: the one place a backend is built, for the GUI, ``duet run``, ``duet eval`` and tests.

Settings come from :class:`~app.core.config.BackendSettings` (validated there, with ranges), the
thread count from the one policy in :func:`~app.core.config.resolve_threads`. A caller picks either
a model reference (library name, ``demo``, ``tiny`` or a GGUF path) for the in-process llama.cpp
engine, or ``remote=URL`` for an OpenAI-compatible server. :class:`RunRequest` is everything one
session starts from (source, model, validated settings).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from app.capture.base import FrameSource
from app.core.config import BackendSettings, SessionConfig, lower_compute_priority, resolve_threads
from app.core.protocol import MODEL_NAME
from app.engine.backend import Backend


@dataclass(frozen=True)
class RemoteSpec:
    """An OpenAI-compatible server to use instead of the in-process engine."""

    url: str
    model: str = MODEL_NAME
    api_key_env: str = "DUET_API_KEY"


def make_backend(model: str, mmproj: str | None = None, settings: BackendSettings | None = None, *,
                 remote: RemoteSpec | None = None, interactive: bool = False, isolated: bool = True) -> Backend:
    """Load the backend a caller asks for.

    ``isolated`` (the default) runs llama.cpp in a process of its own (:mod:`app.engine.engine_process`),
    so a native crash ends that process with a message instead of ending the caller; False loads it in this
    process (the engine's own tests and benchmarks, which look inside it).
    ``interactive`` is True for the GUI: the model's compute threads yield to the window (the engine's
    process at nice +10; in-process, :func:`~app.core.config.lower_compute_priority`) and use every core;
    where they cannot, one core is left to the window.
    Raises :class:`~app.engine.backend.BackendError` (a :class:`~app.core.errors.DuetError`) with
    the file or setting at fault.
    """
    if remote is not None:
        from app.engine.vllm_remote import remote_backend  # vLLM gets its prefix-cache-friendly backend

        return remote_backend(remote.url, model=remote.model, api_key_env=remote.api_key_env)
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.modelhub.library import resolve_model

    s = settings or BackendSettings()
    model_path, mmproj_path = resolve_model(model, mmproj)
    if isolated:
        from app.engine.engine_process import EngineProcess

        yields = interactive and sys.platform.startswith("linux")  # the engine's process runs at nice +10
        threads = resolve_threads(s.n_threads, leave_one_for_ui=interactive and not yields)
        return EngineProcess(model_path, mmproj_path, LlamaSettings.of(s, n_threads=threads),
                             nice=10 if yields else 0)
    yields = interactive and lower_compute_priority()
    threads = resolve_threads(s.n_threads, leave_one_for_ui=interactive and not yields)
    return LlamaBackend(model_path, mmproj_path, LlamaSettings.of(s, n_threads=threads))


@dataclass
class RunRequest:
    """Everything one session starts from; settings validated by their dataclasses."""

    source: str  # a source spec (app.capture.parse)
    model: str  # a model reference (app.modelhub.library.resolve_model)
    config: SessionConfig = field(default_factory=SessionConfig)
    backend: BackendSettings = field(default_factory=BackendSettings)
    mmproj: str | None = None
    questions: list[tuple[str, float | None]] = field(default_factory=list)  # (text, video time or None)
    realtime: bool = True  # video files: follow the wall clock (False = every frame, as fast as possible)
    interactive: bool = False  # a GUI is running: the thread policy leaves it a core
    remote: RemoteSpec | None = None  # an OpenAI-compatible server instead of the engine (duet run --remote)


BackendFactory = Callable[[RunRequest], Backend]
SourceFactory = Callable[[RunRequest], FrameSource]


def default_backend(request: RunRequest) -> Backend:
    return make_backend(request.model, request.mmproj, request.backend, remote=request.remote,
                        interactive=request.interactive)


def recorded_model(request: RunRequest, backend: Backend) -> str:
    """The model a session records: ``request.model``, or for a remote one the model the server runs and where
    (the URL without any ``user:password@``), not ``--model``'s default that it never ran."""
    if request.remote is None:
        return request.model
    from app.core.textsafe import without_userinfo

    return f"{getattr(backend, 'model', request.remote.model)} at {without_userinfo(request.remote.url)}"
