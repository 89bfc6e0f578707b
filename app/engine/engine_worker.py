"""The engine's own process: llama.cpp runs here, so a native fault ends this process, not the app.

Started by :class:`~app.engine.engine_process.EngineProcess` as ``duet engine-worker`` (the frozen app)
or ``python -m app engine-worker``. It reads requests from stdin and answers on stdout
(:mod:`app.engine.engine_wire`); before anything else it moves stdout aside and points file
descriptor 1 at stderr, so a stray ``printf`` in native code can never corrupt the protocol.

Requests: ``load`` (model, projector, settings), ``reset``, ``step`` (frames in shared memory),
``close``. Each gets one reply: ``{"ok": true, …}`` or ``{"ok": false, "error": message, "kind": …}``.
``DUET_ENGINE_FAULT=SIGNAME[:STEP]`` makes the engine kill itself with that signal on the given step
(default 1): a real signal in a real process, for the fault tests and ``duet doctor``'s own check.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Any

from app.engine import engine_wire as wire


def _settings(d: dict[str, Any]):  # noqa: ANN202 - LlamaSettings, imported late
    from app.engine.llama_backend import LlamaSettings
    from app.engine.reply_guard import ReplyGuard

    d = dict(d)
    guard = d.pop("guard", None)
    known = {f.name for f in dataclasses.fields(LlamaSettings)}
    s = LlamaSettings(**{k: v for k, v in d.items() if k in known})
    return dataclasses.replace(s, guard=ReplyGuard(**guard)) if guard else s


def _fault() -> tuple[int, int] | None:
    spec = os.environ.get("DUET_ENGINE_FAULT", "")
    if not spec:
        return None
    name, _, at = spec.partition(":")
    return int(getattr(signal, name.upper())), int(at or 1)


def serve(inp, out) -> int:  # noqa: ANN001 - binary streams
    backend = None
    frames = wire.FrameReader()
    fault = _fault()
    steps = 0
    try:
        while True:
            try:
                req = wire.recv(inp)
            except wire.WireClosed:
                return 0  # the app went away: nothing left to do
            op = req.get("op")
            try:
                if op == "load":
                    reply = _load(req)
                    backend = reply.pop("_backend")
                elif op == "reset":
                    backend.reset(req["system_prompt"])
                    reply = {"ok": True}
                elif op == "step":
                    steps += 1
                    if fault and steps == fault[1]:
                        os.kill(os.getpid(), fault[0])
                    images = frames.get(req["images"])
                    r = backend.step(images, req.get("text", ""), must_reply=bool(req.get("must_reply")),
                                     talkativeness=float(req.get("talkativeness", 0.0)),
                                     max_new_tokens=int(req.get("max_new_tokens", 128)))
                    reply = {"ok": True, "step": dataclasses.asdict(r)}
                elif op == "close":
                    if backend is not None:
                        backend.close()
                        backend = None
                    wire.send(out, {"ok": True})
                    return 0
                else:
                    reply = {"ok": False, "error": f"unknown request {op!r}", "kind": "ValueError"}
            except Exception as e:  # noqa: BLE001 - reported to the app, which raises it there
                from app.engine.backend import BackendError

                kind = "BackendError" if isinstance(e, BackendError) else type(e).__name__
                reply = {"ok": False, "error": str(e), "kind": kind}
            wire.send(out, reply)
    finally:
        frames.close()
        if backend is not None:
            backend.close()


def _load(req: dict[str, Any]) -> dict[str, Any]:
    variant = (req.get("settings") or {}).get("cpu_variant", "auto")
    if variant != "auto":
        os.environ["DUET_CPU_VARIANT"] = variant
    gpu = (req.get("settings") or {}).get("gpu", -1)
    if isinstance(gpu, int) and gpu >= 0:  # BackendSettings.gpu: before llama.cpp reads the devices it may use
        from app.modelhub.hardware import select_gpu

        select_gpu(gpu)
    if req.get("nice"):
        try:  # the whole engine yields to the window (and to the rest of the desktop)
            os.nice(int(req["nice"]))
        except (OSError, AttributeError):
            pass
    from app.engine.llama_backend import LlamaBackend
    from app.modelhub.llama_lib import load_backends

    try:
        info = load_backends()
    except OSError as e:
        from app.engine.backend import BackendError

        raise BackendError(str(e)) from e
    backend = LlamaBackend(req["model"], req["mmproj"], _settings(req.get("settings") or {}))
    return {"ok": True, "_backend": backend, "device": backend.device, "n_ctx": backend.n_ctx,
            "cpu_variant": info.cpu_variant, "cpu_variants": info.cpu_variants_available,
            "n_threads": backend.settings.n_threads, "pid": os.getpid()}


def main() -> int:
    # The protocol owns the original stdin/stdout; native code's prints go to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    import logging

    logging.basicConfig(level=os.environ.get("DUET_ENGINE_LOG", "WARNING").upper(),
                        format="engine %(levelname)s %(name)s: %(message)s")
    return serve(inp, out)


if __name__ == "__main__":
    raise SystemExit(main())
