"""make_backend: the one factory and thread policy; the engine never changes its caller's settings."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app.core.config import BackendSettings, resolve_threads
from app.core.errors import DuetError
from app.engine.factory import make_backend
from app.engine.llama_backend import LlamaBackend, LlamaSettings


def test_the_caller_s_settings_are_left_as_they_were(tiny_model) -> None:
    mine = LlamaSettings(n_ctx=2048, n_threads=0, n_gpu_layers=0)
    b = LlamaBackend(tiny_model.model, tiny_model.mmproj, mine)
    try:
        assert mine.n_threads == 0, "LlamaBackend changed its caller's settings in place"
        assert b.settings is not mine and b.settings.n_threads == resolve_threads(0)
    finally:
        b.close()


def test_make_backend_applies_the_one_thread_policy(tiny_model) -> None:
    """For the GUI, on Linux, the engine's process yields to the window (nice +10, its compute threads with it)
    and the model gets every core; elsewhere one core is left to the window. No thread of the app is lowered."""
    seen: dict[str, object] = {}

    def session_thread() -> None:  # the GUI loads its model on the session's thread, never the window's
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        gui = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0), interactive=True)
        try:
            seen.update(threads=gui.settings.n_threads, n_ctx=gui.n_ctx,
                        engine=os.getpriority(os.PRIO_PROCESS, gui.pid) - os.getpriority(os.PRIO_PROCESS, 0),
                        raised=os.getpriority(os.PRIO_PROCESS, tid) - before)
        finally:
            gui.close()

    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=session_thread)
    t.start()
    t.join(120)
    assert seen["n_ctx"] >= 2048 and seen["raised"] == 0
    if sys.platform.startswith("linux"):
        assert seen["threads"] == resolve_threads(0) and seen["engine"] == min(10, 19 - main_nice)
    else:
        assert seen["threads"] == resolve_threads(0, leave_one_for_ui=True) and seen["engine"] == 0
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the window's thread untouched
    cli = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0))
    try:
        assert cli.settings.n_threads == resolve_threads(0)  # headless: every core, priority as it was
        assert os.getpriority(os.PRIO_PROCESS, cli.pid) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        cli.close()


def test_in_process_the_session_thread_itself_yields(tiny_model) -> None:
    """isolated=False (the engine's tests and benchmarks): the calling thread is lowered, once."""
    seen: dict[str, int] = {}

    def session_thread() -> None:
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        for _ in range(2):  # a second model in the same thread: lowered once only
            make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0),
                         interactive=True, isolated=False).close()
        seen["raised"] = os.getpriority(os.PRIO_PROCESS, tid) - before

    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=session_thread)
    t.start()
    t.join(120)
    assert seen["raised"] == (min(10, 19 - main_nice) if sys.platform.startswith("linux") else 0)


def test_a_missing_model_is_a_user_facing_error(tmp_path) -> None:
    with pytest.raises(DuetError, match="nope.gguf"):
        make_backend(str(tmp_path / "nope.gguf"))
