"""The llama.cpp engine in a process of its own, as Ollama's runner and LM Studio's worker are.

llama.cpp is native code: an instruction the CPU lacks (SIGILL), a bad pointer (SIGSEGV), an abort on
an internal check, the kernel's out-of-memory killer or a GPU driver fault ends the whole process it
runs in. :class:`EngineProcess` is a :class:`~app.engine.backend.Backend` whose model lives in a child
(:mod:`app.engine.engine_worker`); when the child dies the step raises :class:`EngineCrashed`, a
:class:`~app.engine.backend.BackendError` whose message says what happened in words (the signal, its
likely cause, what to do) and which carries a safer setting to start again with. The app, its window,
the session's transcript and its saved file are untouched.

Frames cross through shared memory (:mod:`app.engine.engine_wire`); the cost of the boundary per step
is measured by ``bench/engine_process.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import DEFAULT_MAX_NEW_TOKENS
from app.core.types import StepTimings
from app.engine import engine_wire as wire
from app.engine.backend import BackendError, BackendStep

log = logging.getLogger("duet.engine.process")

# What each way of dying most likely means, and what to do about it. "Start again" is the app's Start button
# (which then uses the fallback); from a terminal, the same settings are --gpu-layers 0 --cpu-variant x64.
_SAFE = "Start again to run on the safe settings (CPU only, portable kernels; in a terminal: --gpu-layers 0 --cpu-variant x64)."
_CAUSES = {
    "SIGILL": ("it hit an instruction this processor does not have",
               "Start again to run on the portable CPU kernels (slower; in a terminal: --cpu-variant x64). "
               "`duet doctor` shows which kernels this CPU runs; please report it with that output."),
    "SIGSEGV": ("it crashed inside llama.cpp or a GPU driver (a segmentation fault)", _SAFE),
    "SIGBUS": ("it crashed inside llama.cpp (a bus error: a model file changed or a disk failed while in use)",
               "Check the model file (`duet models list`), then press Start."),
    "SIGABRT": ("llama.cpp stopped on an internal check (often out of memory on the GPU, or a model it "
                "cannot run)", _SAFE),
    "SIGFPE": ("it crashed on an arithmetic fault inside llama.cpp", _SAFE),
    "SIGKILL": ("it was killed, most often by the system when memory ran out",
                "Close other programs, or choose a smaller model or context, then start again."),
    "SIGTERM": ("it was asked to stop by another program", "Start again to go on."),
}


class EngineCrashed(BackendError):
    """The engine's process died. ``fallback`` holds the settings to start again with (may be empty)."""

    def __init__(self, message: str, *, signal_name: str | None, fallback: dict[str, Any]) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.fallback = fallback


def app_command(*args: str) -> list[str]:
    """The ``duet`` command as a child process runs it: the frozen app runs itself (on Windows its console twin
    ``duet-cli.exe``: the windowed ``duet.exe`` has no standard streams to talk through); from source, this
    interpreter runs the package."""
    if getattr(sys, "frozen", False):
        exe = Path(sys.executable)
        cli = exe.with_name("duet-cli.exe")
        return [str(cli if sys.platform == "win32" and cli.is_file() else exe), *args]
    return [sys.executable, "-m", "app", *args]


# Windows reports a crash as an NTSTATUS exit code, not a signal: the POSIX signal each one amounts to.
_WINDOWS_STATUS = {0xC000001D: "SIGILL", 0xC0000005: "SIGSEGV", 0xC0000409: "SIGABRT"}


def exit_signal(returncode: int) -> str | None:
    """The signal a child died by (``SIGILL`` …), from POSIX's negative code or Windows' NTSTATUS; None if it exited."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return _WINDOWS_STATUS.get(returncode & 0xFFFFFFFF)


def worker_command() -> list[str]:
    """How to start the engine. ``DUET_ENGINE_LAUNCHER`` is put in front when set (split like a shell would): a
    wrapper such as ``taskset -c 2,3`` or, in the portability check (installer/smoke_frozen.py),
    ``qemu-x86_64 -cpu Nehalem``, which runs the engine, the process that loads llama.cpp, on an emulated older CPU."""
    return [*shlex.split(os.environ.get("DUET_ENGINE_LAUNCHER", "")), *app_command("engine-worker")]


def describe_exit(returncode: int) -> tuple[str | None, str]:
    """(signal name or None, a sentence a user can act on) for an engine that ended with ``returncode``."""
    name = exit_signal(returncode)
    if name is not None:
        cause, todo = _CAUSES.get(name, ("it was ended by a signal", "Start again to go on."))
        return name, f"The model's engine stopped ({name}): {cause}. The session so far is saved. {todo}"
    return None, (f"The model's engine exited unexpectedly (code {returncode}). The session so far is saved. "
                  "Start again to go on; `duet doctor` checks this computer.")


def fallback_for(signal_name: str | None, cpu_variants: list[str] | None = None) -> dict[str, Any]:
    """Safer BackendSettings changes to start again with, after the engine died by ``signal_name``: CPU only,
    on ggml's baseline CPU library (any x86-64). Nothing for a kill or a bus error: the settings were not the
    cause. ``cpu_variants``: the CPU libraries the engine found (None: unknown, it died while loading)."""
    if signal_name in (None, "SIGKILL", "SIGTERM", "SIGBUS"):
        return {}
    safe: dict[str, Any] = {"n_gpu_layers": 0}
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if (cpu_variants is None and x86) or (cpu_variants and "x64" in cpu_variants):
        safe["cpu_variant"] = "x64"
    return safe


class EngineProcess:
    """A :class:`~app.engine.backend.Backend` whose llama.cpp runs in a child process. See the module docstring."""

    name = "llama.cpp"

    def __init__(self, model_path: Path | str, mmproj_path: Path | str, settings: Any, *, nice: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings  # LlamaSettings, as sent (threads already resolved by the caller)
        self.cpu_variant = cpu_variant = settings.cpu_variant
        self._lock = threading.Lock()
        self._frames = wire.FrameWriter()
        self._dead: EngineCrashed | None = None
        self.cpu_variants: list[str] | None = None  # the CPU libraries the engine found (None: not loaded yet)
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env, bufsize=0)
        self.pid = self.proc.pid
        try:
            reply = self._call({"op": "load", "model": str(model_path), "mmproj": str(mmproj_path),
                                "settings": dataclasses.asdict(settings), "nice": nice})
        except BaseException:
            self._kill()
            raise
        self.device = str(reply["device"])
        if cpu_variant != "auto" and self.device.startswith("CPU"):  # the fallback after a crash says so
            self.device = f"{self.device} ({cpu_variant} kernels)"
        self.n_ctx = int(reply["n_ctx"])
        self.cpu_variant_loaded = reply.get("cpu_variant")
        self.cpu_variants = list(reply.get("cpu_variants") or [])
        self.settings = dataclasses.replace(settings, n_threads=int(reply.get("n_threads", settings.n_threads)))
        log.info("engine process %d: %s, CPU library %s", self.pid, self.device, self.cpu_variant_loaded)

    # ---- the Backend protocol -----------------------------------------------------------------
    def reset(self, system_prompt: str) -> None:
        self._call({"op": "reset", "system_prompt": system_prompt})

    def step(self, images: Sequence[np.ndarray], text: str = "", *, must_reply: bool = False,
             talkativeness: float = 0.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> BackendStep:
        with self._lock:
            self._check_alive()
            descriptor = self._frames.put(images)
            reply = self._call_locked({"op": "step", "images": descriptor, "text": text, "must_reply": must_reply,
                                       "talkativeness": talkativeness, "max_new_tokens": max_new_tokens})
        d = dict(reply["step"])
        d["timings"] = StepTimings(**d.get("timings", {}))
        return BackendStep(**d)

    def close(self) -> None:
        with self._lock:
            if self.proc.poll() is None and self._dead is None:
                try:
                    wire.send(self.proc.stdin, {"op": "close"})
                    wire.recv(self.proc.stdout)
                    self.proc.wait(timeout=10)  # it frees the model and exits by itself
                except (OSError, wire.WireClosed, ValueError, subprocess.TimeoutExpired):
                    pass
            self._kill()
            self._frames.close()

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the pipe -----------------------------------------------------------------------------
    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._check_alive()
            return self._call_locked(message)

    def _call_locked(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            wire.send(self.proc.stdin, message)
            reply = wire.recv(self.proc.stdout)
        except (OSError, wire.WireClosed, ValueError) as e:
            raise self._crashed() from e
        if not reply.get("ok"):
            raise BackendError(str(reply.get("error") or "the engine failed"))
        return reply

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise self._dead

    def _crashed(self) -> EngineCrashed:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the pipe broke but the process lingers: end it
            self._kill()
            rc = self.proc.returncode if self.proc.returncode is not None else -signal.SIGKILL
        name, message = describe_exit(rc)
        log.error("engine process %d ended: %s", self.proc.pid, message)
        self._dead = EngineCrashed(message, signal_name=name, fallback=self._fallback(name))
        return self._dead

    def _fallback(self, signal_name: str | None) -> dict[str, Any]:
        return fallback_for(signal_name, self.cpu_variants)

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("engine process %d did not end after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
