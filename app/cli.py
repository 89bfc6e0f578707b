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

from app.core.timefmt import clock as _fmt_time


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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_models_pull(a: argparse.Namespace) -> int:
    from app.modelhub import hardware
    from app.modelhub.pull import PullEvent, PullJob

    tty = sys.stderr.isatty()
    last_line = [0.0]

    def show(ev: PullEvent) -> None:
        import time

        if a.json:
            print(json.dumps(ev.to_json()), flush=True)
            return
        if ev.stage == "download" and ev.total:
            now = time.monotonic()  # a log (not a terminal) gets a line every 5 s, not every update
            if not tty and now - last_line[0] < 5 and ev.done < ev.total:
                return
            last_line[0] = now
            pct = 100 * ev.done / ev.total
            eta = _fmt_time(ev.eta) if ev.eta is not None else "--:--"
            line = (f"{ev.stage:9s} {pct:5.1f}%  {_human_bytes(ev.done)} / {_human_bytes(ev.total)}  "
                    f"{_human_bytes(ev.rate)}/s  ETA {eta}")
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            if ev.done >= ev.total and tty:
                print(file=sys.stderr)
            return
        print(f"{ev.stage:9s} {ev.message}", file=sys.stderr, flush=True)

    if not a.json:
        hw = hardware.detect()
        rec = hardware.recommend(hw)
        print(f"this machine: {'; '.join(hardware.describe(hw))}", file=sys.stderr)
        print(f"recommended:  {rec.quant} on {rec.device}" + ("" if a.quant else f" (pulling {rec.quant})"),
              file=sys.stderr)
    quant = a.quant or hardware.recommend(hardware.detect()).quant
    job = PullJob(a.repo, revision=a.revision, quant=quant, name=a.name, keep_intermediate=a.keep_intermediate,
                  progress=show, threads=a.threads)
    entry = job.run()
    print(f"added {entry.name}: {entry.model}")
    return 0


def cmd_models_recommend(a: argparse.Namespace) -> int:
    from app.modelhub import hardware

    hw = hardware.detect()
    rec = hardware.recommend(hw, main_gpu=a.gpu)
    if a.json:
        print(json.dumps({"hardware": hw.to_json(), "recommendation": rec.to_json()}, indent=2))
        return 0
    for line in hardware.describe(hw):
        print(line)
    print(f"\nMMDuet2 on this machine: {rec.quant} on {rec.device}"
          + ("" if rec.fits else " (does NOT fit; see below)"))
    flags = f"--gpu-layers {rec.gpu_layers} --tokens-per-frame {rec.tokens_per_frame} --interval {rec.interval:g}"
    if rec.main_gpu >= 0:
        flags += f" --gpu {rec.main_gpu}"
    print(f"  duet models pull wangyueqian/MMDuet2 --quant {rec.quant}")
    print(f"  duet run --model mmduet2-{rec.quant.lower()} {flags} --source …")
    for r in rec.reasons:
        print(f"  · {r}")
    return 0


def cmd_models_remove(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary

    ModelLibrary().remove(a.name, delete_files=not a.keep_files)
    print(f"removed {a.name}")
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
        self.records = 0

    def write(self, record: dict) -> None:
        from app.core.atomic import append_whole

        try:
            append_whole(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        except OSError as e:
            e.filename = e.filename or f"{self.path} (it keeps its first {self.records} records, whole)"
            raise
        self.records += 1

    def close(self) -> None:
        import os

        os.close(self.fd)


def cmd_run(a: argparse.Namespace) -> int:
    """Headless session: the same controller the GUI drives, with replies printed as they come."""
    from app.capture.parse import open_source
    from app.core.config import SessionConfig
    from app.core.textsafe import terminal_safe
    from app.engine.controller import Failed, Problem, RunRequest, SessionController, StepDone

    config = SessionConfig(interval=a.interval, frames_per_turn=a.frames_per_turn,
                           tokens_per_frame=a.tokens_per_frame, talkativeness=a.talkativeness,
                           max_new_tokens=a.max_new_tokens, max_turns=a.max_turns, cadence=a.cadence)
    source = open_source(a.source, realtime=not a.fast)  # fail fast on a bad source, before loading a model
    try:
        backend = make_backend(a)
    except BaseException:
        source.close()
        raise
    out = _JsonlOut(a.jsonl) if a.jsonl else None
    write_error: list[OSError] = []  # a full disk stops the session; the error is reported after it
    failures: list[str] = []
    n_replies = 0

    def show(event: object) -> None:
        nonlocal n_replies
        if isinstance(event, (Failed, Problem)):
            failures.append(event.message)
            print(f"duet: {event.message}", file=sys.stderr)
        if not isinstance(event, StepDone):
            return
        r = event.result
        if r.question:
            print(f"[{_fmt_time(r.video_time)}] (you) {r.question}")
        if not r.silent:
            n_replies += 1
            print(f"[{_fmt_time(r.video_time)}] {terminal_safe(r.text.strip())}", flush=True)
        elif a.verbose:
            print(f"[{_fmt_time(r.video_time)}] · ({r.timings.total_ms:.0f} ms: {r.timings.describe()}; "
                  f"{r.cadence.describe() if r.cadence else ''})", flush=True)
        if out and not write_error:
            try:
                out.write(r.to_json())
            except OSError as e:
                write_error.append(e)
                controller.stop()

    from app.core.sessions import SessionStore

    store = SessionStore() if a.save_session else None  # the same store, meta and records as the app
    controller = SessionController(lambda _r: backend, lambda _r: source, listener=show, store=store)
    request = RunRequest(source=a.source, model=a.model, config=config,
                         questions=[(q, None) for q in a.ask] + [(q, t) for t, q in a.ask_at])
    if getattr(backend, "device", "") == "CPU" and not a.remote:
        from app.modelhub.hardware import detect, switch_hint

        hint = switch_hint(detect())  # a GPU is here but this llama.cpp build cannot use it
        if hint:
            print(f"Duet: {hint}", file=sys.stderr)
    print(f"Duet: {a.source} · {getattr(backend, 'device', '?')} · every {a.interval:g} s, "
          f"{a.frames_per_turn} frame(s) a turn", file=sys.stderr)
    reason = "ended"
    try:
        reason = controller.run(request)
        if write_error:
            raise write_error[0]
    except KeyboardInterrupt:
        reason = "stopped"
        print("stopped", file=sys.stderr)
    finally:
        if out:
            out.close()
        controller.release_backend()
    last = controller.last_result
    failed = reason == "error" and bool(failures)
    if failed and last is None:
        return 2  # nothing ran: the message above says why (never a quiet "0 turns")
    turns, video = (last.turn + 1, last.video_time) if last else (0, 0.0)
    print(f"{turns} turns, {n_replies} replies, {_fmt_time(video)} of video", file=sys.stderr)
    if controller.last_session_id:
        print(f"session {controller.last_session_id}")
    return 2 if failed else 0


def cmd_serve(a: argparse.Namespace) -> int:
    import os

    import uvicorn

    from app.core.errors import InputError
    from app.engine.serve import (
        ServePolicy,
        create_server_app,
        default_key_file,
        load_or_create_api_key,
        parse_networks,
    )
    from app.modelhub.library import resolve_model

    if a.allow_files and not Path(a.allow_files).is_dir():
        raise InputError(f"--allow-files {a.allow_files}: not a folder")
    if a.max_body_mb <= 0 or a.max_tokens < 1 or a.timeout <= 0:
        raise InputError("--max-body-mb and --timeout must be > 0 and --max-tokens ≥ 1")
    url_networks = parse_networks(a.allow_url_net)
    if url_networks and not a.allow_urls:
        raise InputError("--allow-url-net only widens --allow-urls; add --allow-urls")
    model, mmproj = resolve_model(a.model, a.mmproj)
    key_file = Path(a.api_key_file) if a.api_key_file else default_key_file()
    if os.environ.get("DUET_SERVE_API_KEY"):
        key, new = os.environ["DUET_SERVE_API_KEY"], False
        if len(key) < 16:
            raise InputError("DUET_SERVE_API_KEY must be at least 16 characters")
    else:
        key, new = load_or_create_api_key(key_file)
    policy = ServePolicy(api_key=key, alias=a.alias, allow_files=Path(a.allow_files) if a.allow_files else None,
                         allow_urls=a.allow_urls, url_networks=url_networks, cors_origins=tuple(a.cors_origin),
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


def backend_settings(a: argparse.Namespace):
    """The :class:`~app.core.config.BackendSettings` a command's flags ask for (validated)."""
    from app.core.config import BackendSettings

    return BackendSettings(n_ctx=a.n_ctx, n_threads=a.threads, n_gpu_layers=a.gpu_layers, flash_attn=a.flash_attn)


def make_backend(a: argparse.Namespace):
    """The backend a command's flags ask for: in-process llama.cpp, or a remote server."""
    from app.engine.factory import RemoteSpec
    from app.engine.factory import make_backend as build

    remote = RemoteSpec(a.remote, a.remote_model, a.api_key_env) if getattr(a, "remote", None) else None
    return build(a.model, a.mmproj, backend_settings(a), remote=remote)


def add_backend_args(p: argparse.ArgumentParser) -> None:
    from app.core.config import BACKEND_FLAGS, FLASH_ATTN, BackendSettings, add_arguments

    p.add_argument("--model", default="demo", help="library name, 'demo', 'tiny', or a text GGUF path")
    p.add_argument("--mmproj", help="vision projector GGUF (default: the mmproj beside the model)")
    add_arguments(p, BackendSettings, ("n_ctx", "n_threads", "n_gpu_layers"), BACKEND_FLAGS)
    p.add_argument("--flash-attn", choices=FLASH_ATTN, default="auto")
    p.add_argument("--gpu", type=int, help="run on this GPU only (its number in `duet models recommend`)")
    p.add_argument("--remote", metavar="URL", help="OpenAI-compatible server (e.g. http://127.0.0.1:8080/v1)")
    p.add_argument("--remote-model", default="mmduet2", help="model name to send to the remote server")
    p.add_argument("--api-key-env", default="DUET_API_KEY", help="environment variable holding the API key")


class _VersionAction(argparse.Action):
    """``--version``: argparse's own action re-wraps the text into one line; this keeps its lines."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        from app.core.version import version_text

        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from app.core.config import (
        BACKEND_FLAGS,
        CADENCES,
        BackendSettings,
        SessionConfig,
        add_arguments,
        default,
    )

    ap = argparse.ArgumentParser(prog="duet", description="Duet: an assistant that watches with you.")
    ap.add_argument("-v", "--log-level", default="WARNING", help="DEBUG, INFO, WARNING …")
    ap.add_argument("--version", action=_VersionAction, help="the version and where to get a newer one")
    sub = ap.add_subparsers(dest="command")

    sub.add_parser("gui", help="the desktop app (default; `duet gui --help` lists its flags)")

    r = sub.add_parser("run", help="watch a source headless and print replies")
    r.add_argument("--source", required=True, help="FILE | camera[:N] | screen[:N] | region:X,Y,W,H | window:TITLE")
    add_backend_args(r)
    r.add_argument("--ask", action="append", default=[], help="a question asked at the start")
    r.add_argument("--ask-at", action="append", default=[], type=_timed_question, metavar="SECONDS:QUESTION",
                   help="a question asked at a video time")
    add_arguments(r, SessionConfig, ("interval", "frames_per_turn", "tokens_per_frame", "talkativeness",
                                     "max_new_tokens", "max_turns"))
    r.add_argument("--cadence", choices=list(CADENCES), default=default(SessionConfig, "cadence"),
                   help="slower than real time: keep every frame, or stay live (skip stale frames, fewer tokens/frame)")
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
    add_arguments(sv, BackendSettings, ("n_ctx", "n_gpu_layers"), BACKEND_FLAGS)
    sv.add_argument("--api-key-file", help="where the API key is kept (created, 0600, on first start); "
                    "or set DUET_SERVE_API_KEY")
    sv.add_argument("--allow-files", metavar="DIR", help="also accept image paths / file:// URLs inside DIR")
    sv.add_argument("--allow-urls", action="store_true",
                    help="also fetch http(s) image URLs at public addresses, redirects checked hop by hop "
                    "(off: inline only)")
    sv.add_argument("--allow-url-net", action="append", default=[], metavar="CIDR",
                    help="with --allow-urls, also fetch from this loopback/private network, e.g. 192.168.1.0/24 "
                    "(repeatable; default: none)")
    sv.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                    help="allow browser pages from ORIGIN (repeatable; default: no CORS)")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted")
    sv.add_argument("--max-tokens", type=int, default=512, help="cap on a reply's length in tokens")
    sv.add_argument("--timeout", type=float, default=120.0,
                    help="seconds a request may wait for the model, and seconds of generation before a reply is ended")
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("models", help="pull, convert, quantize, list, import and remove models").add_subparsers(dest="action",
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
    pl = m.add_parser("pull", help="download a model from Hugging Face, verify, convert, quantize and add it")
    pl.add_argument("repo", help="owner/name, e.g. wangyueqian/MMDuet2 (or a repository of GGUF + mmproj files)")
    pl.add_argument("--revision", default="main", help="branch, tag or commit")
    pl.add_argument("--quant", type=str.upper, choices=["Q4_K_M", "Q5_K_M", "Q8_0", "F16"],
                    help="quantization (default: the one recommended for this machine)")
    pl.add_argument("--name", help="library name (default: <repo name>-<quant>)")
    pl.add_argument("--keep-intermediate", action="store_true",
                    help="keep the downloaded checkpoint and the F16 GGUF (default: delete them once imported)")
    pl.add_argument("--threads", type=int, default=0, help="quantizer threads (0 = automatic)")
    pl.add_argument("--json", action="store_true", help="progress as one JSON object a line (for programs)")
    pl.set_defaults(func=cmd_models_pull)
    rc = m.add_parser("recommend", help="this machine's GPUs, RAM and cores, and the settings for MMDuet2")
    rc.add_argument("--gpu", type=int, help="consider only this GPU")
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_models_recommend)
    rm = m.add_parser("remove", help="remove a model from the library (and its files)")
    rm.add_argument("name")
    rm.add_argument("--keep-files", action="store_true")
    rm.set_defaults(func=cmd_models_remove)

    from app.eval.cli import add_commands as add_eval
    from app.sessions_cli import add_commands as add_sessions
    from app.trainer.cli import add_commands as add_train

    add_eval(sub)
    add_train(sub)
    add_sessions(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "gui":  # the app's own flags (--start, --model, --no-first-run …): app/ui/main.py
        from app.ui.main import main as gui_main

        return gui_main(args[1:])
    ap = build_parser()
    a = ap.parse_args(args)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if getattr(a, "gpu", None) is not None and a.command != "models":
        from app.modelhub.hardware import select_gpu

        select_gpu(a.gpu)  # before llama.cpp starts: it reads the device visibility once
    if a.command in (None, "gui"):
        from app.ui.main import main as gui_main

        return gui_main([])
    import errno
    import sqlite3

    from app.core.errors import DuetError

    try:
        return a.func(a)
    except DuetError as e:  # written for the user; anything else but the OS's errors below is a bug
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
