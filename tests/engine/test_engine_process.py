"""The engine in its own process: the same answers as in-process, and a native fault ends only the child.

Faults are real signals delivered to the real engine process: from outside (``os.kill``, as the kernel's
out-of-memory killer does) or raised by the engine itself at a chosen step (``DUET_ENGINE_FAULT``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from app.core import protocol
from app.core.config import BackendSettings, SessionConfig
from app.core.sessions import SessionStore, load_session
from app.engine.backend import BackendError
from app.engine.controller import Failed, RunRequest, SessionController, Started
from app.engine.engine_process import EngineCrashed, EngineProcess, describe_exit
from app.engine.factory import make_backend
from app.engine.llama_backend import LlamaBackend, LlamaSettings


def _frames(seed: int, n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(n)]


def _run(backend, turns: int = 4) -> list[tuple[bool, str]]:  # noqa: ANN001
    backend.reset(protocol.SYSTEM_PROMPT)
    out = []
    for i in range(turns):
        r = backend.step(_frames(i), "What happens?" if i == 1 else "", talkativeness=5.0 if i % 2 else -5.0,
                         max_new_tokens=8)
        out.append((r.silent, r.text))
    return out


def test_the_engine_process_answers_as_the_engine_in_this_process(tiny_model) -> None:
    settings = LlamaSettings(n_ctx=2048, n_threads=1, n_gpu_layers=0)
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, settings) as local:
        expected = _run(local)
    with EngineProcess(tiny_model.model, tiny_model.mmproj, settings) as remote:
        assert remote.pid != os.getpid() and remote.device == "CPU"
        # llama.cpp's OpenMP threads wait passively in the engine's process, whatever the app imported before.
        assert b"OMP_WAIT_POLICY=PASSIVE" in Path(f"/proc/{remote.pid}/environ").read_bytes().split(b"\0")
        assert _run(remote) == expected
        assert remote.n_ctx == local.n_ctx
    assert remote.proc.returncode == 0, "a closed engine ends cleanly"
    assert remote._frames.shm is None


def test_make_backend_isolates_by_default(tiny_model) -> None:
    be = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0))
    try:
        assert isinstance(be, EngineProcess)
    finally:
        be.close()
    be = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048, n_gpu_layers=0), isolated=False)
    try:
        assert isinstance(be, LlamaBackend)
    finally:
        be.close()


@pytest.mark.parametrize("sig, words", [("SIGSEGV", "segmentation fault"), ("SIGILL", "instruction"),
                                        ("SIGABRT", "internal check")])
def test_a_fault_inside_the_engine_ends_the_child_with_a_message(tiny_model, monkeypatch, sig, words) -> None:
    monkeypatch.setenv("DUET_ENGINE_FAULT", f"{sig}:2")
    be = EngineProcess(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_threads=1, n_gpu_layers=0))
    try:
        be.reset(protocol.SYSTEM_PROMPT)
        be.step(_frames(0))  # step 1 runs
        with pytest.raises(EngineCrashed) as info:
            be.step(_frames(1))
        e = info.value
        assert e.signal_name == sig and sig in str(e) and words in str(e) and "saved" in str(e)
        assert e.fallback == {"n_gpu_layers": 0, "cpu_variant": "x64"}
        assert be.proc.returncode == -getattr(signal, sig)
        with pytest.raises(EngineCrashed):  # a dead engine stays dead, it never hangs
            be.step(_frames(2))
    finally:
        be.close()
    assert be._frames.shm is None


def test_an_engine_killed_from_outside_is_reported_as_memory(tiny_model) -> None:
    be = EngineProcess(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_threads=1, n_gpu_layers=0))
    try:
        be.reset(protocol.SYSTEM_PROMPT)
        be.step(_frames(0))
        os.kill(be.pid, signal.SIGKILL)  # as the out-of-memory killer does
        with pytest.raises(EngineCrashed, match="SIGKILL.*memory") as info:
            be.step(_frames(1))
        assert info.value.fallback == {}  # nothing safer to offer than what it was: memory is the cause
    finally:
        be.close()


def test_a_python_error_in_the_engine_is_an_error_not_a_crash(tiny_model) -> None:
    with EngineProcess(tiny_model.model, tiny_model.mmproj,
                       LlamaSettings(n_ctx=2048, n_threads=1, n_gpu_layers=0)) as be:
        be.reset(protocol.SYSTEM_PROMPT)
        with pytest.raises(BackendError, match="unknown request") as info:
            be._call({"op": "no such request"})  # an exception inside the engine, answered as an error
        assert not isinstance(info.value, EngineCrashed)
        assert be.proc.poll() is None  # still alive and usable
        assert be.step(_frames(0)).text


def test_a_bad_model_file_is_refused_by_the_engine_process(tmp_path: Path, tiny_model) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BackendError) as info:
        EngineProcess(bad, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0))
    assert not isinstance(info.value, EngineCrashed) and "bad.gguf" in str(info.value)


def test_describe_exit_names_the_signal_and_what_to_do() -> None:
    name, text = describe_exit(-signal.SIGILL)
    assert name == "SIGILL" and "portable" in text
    name, text = describe_exit(3)
    assert name is None and "code 3" in text


def test_the_controller_survives_an_engine_crash_and_starts_again_on_the_safe_settings(
        tiny_model, tmp_path: Path, vtest_avi: Path, monkeypatch) -> None:
    """A crash mid-session: the session ends with the message, its file is saved, and Start works again,
    on the fallback the crash offered (the portable x64 CPU library, CPU only)."""
    events: list[object] = []
    store = SessionStore(tmp_path / "sessions")
    c = SessionController(store=store, listener=events.append)
    request = RunRequest(source=str(vtest_avi), model=str(tiny_model.model),
                         config=SessionConfig(interval=0.5, frames_per_turn=1, talkativeness=50, max_turns=6),
                         backend=BackendSettings(n_ctx=2048, n_threads=1), realtime=False)
    monkeypatch.setenv("DUET_ENGINE_FAULT", "SIGSEGV:3")
    assert c.run(request) == "error"
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1 and "SIGSEGV" in failed[0].message
    first = load_session(store.root / c.last_session_id)
    assert first.ended == "error" and len(first.steps) == 2  # the two steps before the fault are kept
    assert c.backend is None and c.fallback == {"n_gpu_layers": 0, "cpu_variant": "x64"}

    monkeypatch.delenv("DUET_ENGINE_FAULT")
    events.clear()
    assert c.run(request) == "max turns"
    assert not [e for e in events if isinstance(e, Failed)]
    assert any(isinstance(e, Started) for e in events)
    assert c.backend.cpu_variant_loaded == "x64"  # the portable library, as the message offered
    c.release_backend()
