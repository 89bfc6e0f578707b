"""``duet doctor --child-probe``: the llama.cpp half of the doctor, in a process of its own.

It loads llama.cpp's backends (which CPU library ggml chose, which devices it sees), then runs one step
of the demo model on a synthetic frame, and reports on stdout as it goes, one JSON object a line: a
``{"stage": …}`` line before each part that could kill the process, the part's result after it, and
``{"done": true}`` last. The parent (:mod:`app.doctor.checks`) merges the lines; when the process dies,
the last stage it announced says which check it takes down. Anything llama.cpp itself prints goes to
stderr (stdout is pointed there while it works), so stdout carries only these lines.

``DUET_DOCTOR_PROBE_FAULT`` makes the child fail on purpose, with a real signal sent to itself, so the
parent's handling of a crash is tested on a real crash: ``SIGSEGV`` (any signal name) before loading
anything, ``step:SIGSEGV`` just before the step, ``hang`` (or ``step:hang``) to sleep past the timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

FAULT_ENV = "DUET_DOCTOR_PROBE_FAULT"
QUESTION = "What do you see?"


class _Reporter:
    """Writes the JSON lines to the real stdout while fd 1 points at stderr."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def emit(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[_Reporter]:
    """Native libraries may print to fd 1; while the probe works, fd 1 is stderr and only the reporter
    writes to the saved stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield _Reporter(saved)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _fault(stage: str) -> None:
    """Fail on purpose at ``stage`` when DUET_DOCTOR_PROBE_FAULT asks for it (see the module docstring)."""
    spec = os.environ.get(FAULT_ENV, "").strip()
    where, _, what = spec.rpartition(":")
    if not spec or (where or "start") != stage:
        return
    if what == "hang":
        time.sleep(3600)
        return
    sig = getattr(signal, what, None)
    if not isinstance(sig, signal.Signals):
        return
    try:  # a deliberate crash leaves no core file behind
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    os.kill(os.getpid(), sig)
    time.sleep(5)  # a signal that does not end the process (ignored, caught): carry on afterwards


def _message(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _backends() -> dict[str, Any]:
    from app.modelhub.llama_lib import cpu_features, load_backends

    info = load_backends()
    return {"backends": {"lib_dir": str(info.lib_dir), "dynamic": info.dynamic, "cpu_variant": info.cpu_variant,
                         "variants": list(info.cpu_variants_available), "forced": info.forced,
                         "devices": [list(d) for d in info.devices]},
            "features": cpu_features()}


def synthetic_frame(size: int = 64) -> np.ndarray:
    """A small RGB picture with something in it (a red square on grey), as a camera would hand over."""
    frame = np.full((size, size, 3), 96, np.uint8)
    frame[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (220, 40, 40)
    return frame


def _step() -> dict[str, Any]:
    """One step of the demo model, as ``duet run --model demo`` would resolve it."""
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.modelhub.library import resolve_model
    from app.modelhub.validate import ModelFileError

    try:
        model, mmproj = resolve_model("demo", None)
    except ModelFileError as e:
        return {"step_missing": _message(e)}
    t0 = time.perf_counter()
    backend = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=2048, n_threads=0))  # starts at the system prompt
    try:
        load_s = time.perf_counter() - t0
        out = backend.step([synthetic_frame()], QUESTION, must_reply=False)
        return {"step": {"model": model.name, "device": backend.device, "silent": out.silent,
                         "text": out.text, "ms": out.timings.total_ms, "load_s": load_s}}
    finally:
        backend.close()


def main(*, quick: bool = False) -> int:
    """Run the probe; always exit 0 when the process survives (failures are in the JSON)."""
    _fault("start")
    with _stdout_to_stderr() as out:
        out.emit({"stage": "backends"})
        try:
            out.emit(_backends())
        except Exception as e:  # noqa: BLE001 - reported to the parent, which tells the user
            out.emit({"backends_error": _message(e)})
            out.emit({"done": True})
            return 0
        if not quick:
            out.emit({"stage": "step"})
            _fault("step")
            try:
                out.emit(_step())
            except Exception as e:  # noqa: BLE001 - as above
                out.emit({"step_error": _message(e)})
        out.emit({"done": True})
    return 0
