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
def cmd_run(a: argparse.Namespace) -> int:
    from app.capture.parse import open_source
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
    try:
        writer = _session_writer(a, session.config, backend) if a.save_session else None
    except BaseException:
        source.close()
        backend.close()
        raise
    out = open(a.jsonl, "w", encoding="utf-8") if a.jsonl else None
    print(f"Duet: {a.source} · {getattr(backend, 'device', '?')} · every {a.interval:g} s, "
          f"{a.frames_per_turn} frame(s) a turn", file=sys.stderr)
    n_replies = 0
    reason = "error"  # what the saved session records if the loop raises
    try:
        with source:
            for r in session.run(source):
                if r.question:
                    print(f"[{_fmt_time(r.video_time)}] (you) {r.question}")
                if not r.silent:
                    n_replies += 1
                    print(f"[{_fmt_time(r.video_time)}] {r.text.strip()}", flush=True)
                elif a.verbose:
                    print(f"[{_fmt_time(r.video_time)}] · ({r.timings.total_ms:.0f} ms)", flush=True)
                if out:
                    out.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
                    out.flush()
                if writer is not None:
                    if r.question:
                        writer.add_question(r.question)
                    writer.add_step(r)
                if a.max_turns and r.turn + 1 >= a.max_turns:
                    break
        reason = "ended"
    except KeyboardInterrupt:
        reason = "stopped"
        print("stopped", file=sys.stderr)
    finally:
        if out:
            out.close()
        backend.close()
        if writer is not None:
            writer.close(reason)
            print(f"session {writer.id}")
    print(f"{session.turn} turns, {n_replies} replies, {_fmt_time(session.video_time)} of video", file=sys.stderr)
    return 0


def _session_writer(a: argparse.Namespace, config, backend):  # noqa: ANN001, ANN202 - engine types stay lazy
    """``--save-session``: the same store, meta and records as the app's Watch page."""
    from app.capture.parse import parse_spec
    from app.core.sessions import SessionStore, session_meta

    spec = parse_spec(a.source)
    video = str(Path(spec.path).resolve()) if spec.kind == "file" else None
    writer = SessionStore().create(session_meta(
        a.source, a.remote or a.model, interval=config.interval, frames_per_turn=config.frames_per_turn,
        tokens_per_frame=config.tokens_per_frame, talkativeness=config.talkativeness, video=video))
    writer.update_meta(device=getattr(backend, "device", "?"), source_name=Path(spec.path).name if video else a.source)
    return writer


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from app.engine.serve import create_server_app
    from app.modelhub.library import resolve_model

    model, mmproj = resolve_model(a.model, a.mmproj)
    app = create_server_app(model, mmproj, n_ctx=a.n_ctx, n_gpu_layers=a.gpu_layers, alias=a.alias)
    print(f"serving {model.name} as '{a.alias}' on http://{a.host}:{a.port}/v1", file=sys.stderr)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
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
    r.add_argument("--save-session", action="store_true",
                   help="save the session as the app does (Sessions tab, `duet sessions`) and print its id")
    r.set_defaults(func=cmd_run)

    sv = sub.add_parser("serve", help="serve a model to other machines (OpenAI-compatible, for --remote)")
    sv.add_argument("--model", default="demo")
    sv.add_argument("--mmproj")
    sv.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to accept other machines")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--alias", default="mmduet2")
    sv.add_argument("--n-ctx", type=int, default=8192)
    sv.add_argument("--gpu-layers", type=int, default=-1)
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
    from app.sessions_cli import add_commands as add_sessions
    from app.trainer.cli import add_commands as add_train

    add_eval(sub)
    add_train(sub)
    add_sessions(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if a.command in (None, "gui"):
        from app.ui.main import main as gui_main

        return gui_main([])
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


if __name__ == "__main__":
    sys.exit(main())
