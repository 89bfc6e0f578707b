"""make_backend: the one factory and thread policy; the engine never changes its caller's settings."""

from __future__ import annotations

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
    gui = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0), interactive=True)
    try:
        assert gui.settings.n_threads == resolve_threads(0, leave_one_for_ui=True)
        assert gui.n_ctx >= 2048
    finally:
        gui.close()


def test_a_missing_model_is_a_user_facing_error(tmp_path) -> None:
    with pytest.raises(DuetError, match="nope.gguf"):
        make_backend(str(tmp_path / "nope.gguf"))
