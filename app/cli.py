"""The ``duet`` command: ``gui`` (default), ``run`` (headless), ``models``, ``eval``, ``train``.

Every subcommand is a thin layer over the Qt-free packages, so what the GUI does can be scripted,
benchmarked and tested from here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _timed_question(value: str) -> tuple[float, str]:
    """``12:What is he holding?`` or ``1:05:Question`` → (seconds, text)."""
    parts = value.split(":")
    secs: list[float] = []
    while parts and parts[0].strip().replace(".", "", 1).isdigit() and len(secs) < 3:
        secs.append(float(parts.pop(0)))
    if not secs or not parts:
        raise argparse.ArgumentTypeError(f"{value!r}: expected SECONDS:QUESTION or MM:SS:QUESTION")
    t = 0.0
    for v in secs:
        t = t * 60 + v
    return t, ":".join(parts).strip()


# ---- models ------------------------------------------------------------------------------------
def cmd_models_convert(a: argparse.Namespace) -> int:
    from app.modelhub.convert import convert

    r = convert(a.hf_dir, a.out, outtype=a.outtype, name=a.name, overwrite=a.overwrite)
    print(f"model:  {r.model} ({r.model.stat().st_size / 1e6:.1f} MB)")
    print(f"mmproj: {r.mmproj} ({r.mmproj.stat().st_size / 1e6:.1f} MB)")
    print(f"{r.n_tensors} tensors in {r.seconds:.1f} s")
    return 0


def cmd_models_quantize(a: argparse.Namespace) -> int:
    from app.modelhub.quantize import quantize

    r = quantize(a.input, a.type, a.out, overwrite=a.overwrite, threads=a.threads)
    print(f"{r.path}: {r.size_in / 1e6:.1f} MB → {r.size_out / 1e6:.1f} MB")
    if r.fallbacks:
        print(f"{len(r.fallbacks)} tensor(s) are narrower than a K-quant block (256) and use llama.cpp's "
              f"fallback type: {', '.join(r.fallbacks[:6])}{' …' if len(r.fallbacks) > 6 else ''}")
    return 0


def cmd_models_tiny(a: argparse.Namespace) -> int:
    from app.modelhub.tiny import TinySpec, build_tiny

    t = build_tiny(TinySpec(seed=a.seed), Path(a.out) if a.out else None, force=a.force)
    print(f"hf:     {t.hf_dir}\nmodel:  {t.model}\nmmproj: {t.mmproj}")
    return 0


def cmd_models_list(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary

    entries = ModelLibrary().entries()
    if not entries:
        print("The library is empty. Import a pair with `duet models import NAME MODEL.gguf MMPROJ.gguf`.")
    for e in entries:
        print(f"{e.name:24s} {e.source:10s} {e.model}")
    return 0


def cmd_models_import(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary

    e = ModelLibrary().add(a.name, a.model, a.mmproj, copy=not a.link)
    print(f"added {e.name}: {e.model}")
    return 0


# ---- run -------------------------------------------------------------------------------------
class _JsonlOut:
    """``run --jsonl``: one whole line per step, handed to the kernel at once (a kill loses no record).

    On a write error (a full disk) the file is cut back to its last whole record before the error
    goes up, so it never ends in half a line.
    """

    def __init__(self, path: str) -> None:
        import os

        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.good = 0
        self.records = 0

    def write(self, record: dict) -> None:
        import os

        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            os.ftruncate(self.fd, self.good)
            e.filename = e.filename or f"{self.path} (it keeps its first {self.records} records, whole)"
            raise
        self.good += len(data)
        self.records += 1

    def close(self) -> None:
        import os

        os.close(self.fd)


def cmd_run(a: argparse.Namespace) -> int:
    from app.capture.parse import open_source
    from app.core.textsafe import terminal_safe
    from app.engine.session import ProactiveSession, SessionConfig

    source = open_source(a.source, realtime=not a.fast)  # fail fast on a bad source, before loading a model
    try:
        backend = make_backend(a)
    except BaseException:
        source.close()
        raise
    session = ProactiveSession(backend, SessionConfig(
        interval=a.interval, frames_per_turn=a.frames_per_turn, tokens_per_frame=a.tokens_per_frame,
        talkativeness=a.talkativeness, max_new_tokens=a.max_new_tokens))
    for q in a.ask:
        session.ask(q)
    for t, q in a.ask_at:
        session.ask(q, at=t)
    out = _JsonlOut(a.jsonl) if a.jsonl else None
    print(f"Duet: {a.source} · {getattr(backend, 'device', '?')} · every {a.interval:g} s, "
          f"{a.frames_per_turn} frame(s) a turn", file=sys.stderr)
    n_replies = 0
    try:
        with source:
            for r in session.run(source):
                if r.question:
                    print(f"[{_fmt_time(r.video_time)}] (you) {r.question}")
                if not r.silent:
                    n_replies += 1
                    print(f"[{_fmt_time(r.video_time)}] {terminal_safe(r.text.strip())}", flush=True)
                elif a.verbose:
                    print(f"[{_fmt_time(r.video_time)}] · ({r.timings.total_ms:.0f} ms)", flush=True)
                if out:
                    out.write(r.to_json())
                if a.max_turns and r.turn + 1 >= a.max_turns:
                    break
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        if out:
            out.close()
        backend.close()
    print(f"{session.turn} turns, {n_replies} replies, {_fmt_time(session.video_time)} of video", file=sys.stderr)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    import os

    import uvicorn

    from app.engine.serve import ServePolicy, create_server_app, default_key_file, load_or_create_api_key
    from app.modelhub.library import resolve_model

    if a.allow_files and not Path(a.allow_files).is_dir():
        raise ValueError(f"--allow-files {a.allow_files}: not a folder")
    if a.max_body_mb <= 0 or a.max_tokens < 1 or a.timeout <= 0:
        raise ValueError("--max-body-mb and --timeout must be > 0 and --max-tokens ≥ 1")
    model, mmproj = resolve_model(a.model, a.mmproj)
    key_file = Path(a.api_key_file) if a.api_key_file else default_key_file()
    if os.environ.get("DUET_SERVE_API_KEY"):
        key, new = os.environ["DUET_SERVE_API_KEY"], False
        if len(key) < 16:
            raise ValueError("DUET_SERVE_API_KEY must be at least 16 characters")
    else:
        key, new = load_or_create_api_key(key_file)
    policy = ServePolicy(api_key=key, alias=a.alias, allow_files=Path(a.allow_files) if a.allow_files else None,
                         allow_urls=a.allow_urls, cors_origins=tuple(a.cors_origin),
                         max_body_bytes=int(a.max_body_mb * 1024 * 1024), max_tokens=a.max_tokens,
                         generation_timeout=a.timeout, queue_timeout=a.timeout)
    app = create_server_app(model, mmproj, n_ctx=a.n_ctx, n_gpu_layers=a.gpu_layers, alias=a.alias, policy=policy)
    print(f"serving {model.name} as '{a.alias}' on http://{a.host}:{a.port}/v1", file=sys.stderr)
    if new:
        print(f"new API key (stored in {key_file}, readable by you only):\n    {key}\n"
              f"clients: DUET_API_KEY={key} duet run --remote http://HOST:{a.port}/v1 …", file=sys.stderr)
    elif not os.environ.get("DUET_SERVE_API_KEY"):
        print(f"API key: the one stored in {key_file}", file=sys.stderr)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", limit_concurrency=64, timeout_keep_alive=5)
    return 0


def make_backend(a: argparse.Namespace):
    """The backend a command's flags ask for: in-process llama.cpp, or a remote server."""
    if getattr(a, "remote", None):
        from app.engine.remote_backend import RemoteBackend

        return RemoteBackend(a.remote, model=a.remote_model, api_key_env=a.api_key_env)
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.modelhub.library import resolve_model

    model, mmproj = resolve_model(a.model, a.mmproj)
    return LlamaBackend(model, mmproj, LlamaSettings(
        n_ctx=a.n_ctx, n_threads=a.threads, n_gpu_layers=a.gpu_layers, flash_attn=a.flash_attn))


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="library name, 'demo', 'tiny', or a text GGUF path")
    p.add_argument("--mmproj", help="vision projector GGUF (default: the mmproj beside the model)")
    p.add_argument("--n-ctx", type=int, default=8192, help="context window in tokens")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic)")
    p.add_argument("--gpu-layers", type=int, default=-1, help="layers on the GPU (-1 = all, 0 = CPU only)")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--remote", metavar="URL", help="OpenAI-compatible server (e.g. http://127.0.0.1:8080/v1)")
    p.add_argument("--remote-model", default="mmduet2", help="model name to send to the remote server")
    p.add_argument("--api-key-env", default="DUET_API_KEY", help="environment variable holding the API key")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="duet", description="Duet: an assistant that watches with you.")
    ap.add_argument("-v", "--log-level", default="WARNING", help="DEBUG, INFO, WARNING …")
    sub = ap.add_subparsers(dest="command")

    sub.add_parser("gui", help="the desktop app (default)")

    r = sub.add_parser("run", help="watch a source headless and print replies")
    r.add_argument("--source", required=True, help="FILE | camera[:N] | screen[:N] | region:X,Y,W,H | window:TITLE")
    add_backend_args(r)
    r.add_argument("--ask", action="append", default=[], help="a question asked at the start")
    r.add_argument("--ask-at", action="append", default=[], type=_timed_question, metavar="SECONDS:QUESTION",
                   help="a question asked at a video time")
    r.add_argument("--interval", type=float, default=1.0, help="seconds between frames (paper: 1 s)")
    r.add_argument("--frames-per-turn", type=int, default=2, choices=[1, 2])
    r.add_argument("--tokens-per-frame", type=int, default=128)
    r.add_argument("--talkativeness", type=float, default=0.0, help="bias towards speaking (0 = as trained)")
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--max-turns", type=int, default=0, help="stop after N turns (0 = until the source ends)")
    r.add_argument("--fast", action="store_true",
                   help="video files: feed every frame as fast as possible (evaluation) instead of real time")
    r.add_argument("--jsonl", help="write every step (decision, text, timings, context) here")
    r.add_argument("--verbose", action="store_true", help="also print silent steps")
    r.set_defaults(func=cmd_run)

    sv = sub.add_parser("serve", help="serve a model to other machines (OpenAI-compatible, for --remote)")
    sv.add_argument("--model", default="demo")
    sv.add_argument("--mmproj")
    sv.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to accept other machines")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--alias", default="mmduet2")
    sv.add_argument("--n-ctx", type=int, default=8192)
    sv.add_argument("--gpu-layers", type=int, default=-1)
    sv.add_argument("--api-key-file", help="where the API key is kept (created, 0600, on first start); "
                    "or set DUET_SERVE_API_KEY")
    sv.add_argument("--allow-files", metavar="DIR", help="also accept image paths / file:// URLs inside DIR")
    sv.add_argument("--allow-urls", action="store_true", help="also fetch http(s) image URLs (off: inline only)")
    sv.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                    help="allow browser pages from ORIGIN (repeatable; default: no CORS)")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted")
    sv.add_argument("--max-tokens", type=int, default=512, help="cap on a reply's length in tokens")
    sv.add_argument("--timeout", type=float, default=120.0,
                    help="seconds a request may wait for the model, and seconds of generation before a reply is ended")
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("models", help="convert, quantize, list and import models").add_subparsers(dest="action",
                                                                                                  required=True)
    c = m.add_parser("convert", help="Hugging Face Qwen2.5-VL checkpoint → GGUF + mmproj")
    c.add_argument("hf_dir")
    c.add_argument("--out", required=True)
    c.add_argument("--outtype", choices=["f32", "f16", "bf16"], default="f16")
    c.add_argument("--name")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_models_convert)
    q = m.add_parser("quantize", help="quantize a GGUF with llama.cpp")
    q.add_argument("input")
    q.add_argument("--type", required=True, help="Q4_K_M, Q5_K_M, Q8_0, …")
    q.add_argument("--out")
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_models_quantize)
    t = m.add_parser("tiny", help="build the tiny random test model")
    t.add_argument("--out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true")
    t.set_defaults(func=cmd_models_tiny)
    ls = m.add_parser("list", help="models in the local library")
    ls.set_defaults(func=cmd_models_list)
    im = m.add_parser("import", help="add a GGUF + mmproj pair to the library (validated)")
    im.add_argument("name")
    im.add_argument("model")
    im.add_argument("mmproj")
    im.add_argument("--link", action="store_true", help="record the paths instead of copying the files")
    im.set_defaults(func=cmd_models_import)

    from app.eval.cli import add_commands as add_eval
    from app.trainer.cli import add_commands as add_train

    add_eval(sub)
    add_train(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if a.command in (None, "gui"):
        from app.ui.main import main as gui_main

        return gui_main([])
    import errno
    import sqlite3

    from app.capture.base import CaptureError
    from app.engine.backend import BackendError
    from app.modelhub.convert import ConversionError
    from app.modelhub.quantize import QuantizeError
    from app.modelhub.validate import ModelFileError

    try:
        return a.func(a)
    except (BackendError, CaptureError, ConversionError, QuantizeError, ModelFileError, FileNotFoundError,
            ValueError) as e:
        print(f"duet: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"duet: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:  # the judge cache: "database or disk is full"
        if "full" not in str(e):
            raise
        print(f"duet: error: {describe_os_error(OSError(errno.ENOSPC, str(e)))}", file=sys.stderr)
        return 2


def describe_os_error(e: OSError) -> str:
    """An OS error as a user can act on it: a full disk says so and that earlier files were kept."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return (f"the disk is full{where}; free some space and run the command again "
                "(files written before were kept; nothing half-written was left in their place)")
    return f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)


if __name__ == "__main__":
    sys.exit(main())
