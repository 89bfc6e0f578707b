"""``duet run``: watch a source headless with the same controller the GUI drives; print the replies."""

from __future__ import annotations

import argparse
import json
import sys

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


class _JsonlOut:
    """``run --jsonl``: one whole line per step, handed to the kernel at once (a kill loses no record).

    On a write error (a full disk) the file is cut back to its last whole record before the error
    goes up, so it never ends in half a line.
    """

    def __init__(self, path: str) -> None:
        import os

        from app.core.bounded import check_output_file

        check_output_file(path, "--jsonl")  # a FIFO would block the open until a reader came: forever
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
    from app.core.config import SessionConfig, from_args
    from app.core.sessions import SessionStore
    from app.core.textsafe import terminal_safe, without_userinfo
    from app.engine.backend import BackendError
    from app.engine.controller import Failed, Problem, RunRequest, SessionController, StepDone
    from app.engine.factory import RemoteSpec

    request = RunRequest(source=a.source, model=a.model, mmproj=a.mmproj, config=from_args(SessionConfig, a),
                         backend=backend_settings(a), realtime=not a.fast,
                         remote=RemoteSpec(a.remote, a.remote_model, a.api_key_env) if a.remote else None,
                         questions=[(q, None) for q in a.ask] + [(q, t) for t, q in a.ask_at])
    out = _JsonlOut(a.jsonl) if a.jsonl else None
    write_error: list[OSError] = []  # a full disk stops the session; the error is reported after it
    failures: list[str] = []
    n_replies = 0

    def show(event: object) -> None:
        nonlocal n_replies
        if isinstance(event, (Failed, Problem)):
            failures.append(event.message)
            print(f"duet: {without_userinfo(event.message)}", file=sys.stderr)  # a --remote URL's password too
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

    store = SessionStore() if a.save_session else None  # the same store, meta and records as the app
    controller = SessionController(store=store, listener=show)  # the factories the GUI's controller uses
    try:  # the source first (a bad one fails before the slow part), then the model: what run() starts with
        backend = controller.prepare(request)
    except BaseException as e:
        if out:
            out.close()
        if isinstance(e, BackendError) and e.args and isinstance(e.args[0], str):
            e.args = (without_userinfo(e.args[0]), *e.args[1:])  # a --remote URL's password is not printed
        raise
    if backend.device == "CPU" and not a.remote:
        from app.modelhub.hardware import detect, switch_hint

        hint = switch_hint(detect())  # a GPU is here but this llama.cpp build cannot use it
        if hint:
            print(f"Duet: {hint}", file=sys.stderr)
    print(f"Duet: {a.source} · {without_userinfo(backend.device)} · every {a.interval:g} s, "
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


def backend_settings(a: argparse.Namespace):
    """The :class:`~app.core.config.BackendSettings` a command's flags ask for (validated)."""
    from app.core.config import BackendSettings, from_args

    return from_args(BackendSettings, a)


def add_backend_args(p: argparse.ArgumentParser) -> None:
    from app.core.config import BACKEND_FLAGS, BackendSettings, add_arguments

    p.add_argument("--model", default="demo", help="library name, 'demo', 'tiny', or a text GGUF path")
    p.add_argument("--mmproj", help="vision projector GGUF (default: the mmproj beside the model)")
    add_arguments(p, BackendSettings, ("n_ctx", "n_threads", "n_gpu_layers", "flash_attn", "cpu_variant", "gpu"),
                  BACKEND_FLAGS)  # --gpu: declared once (app/core/config.py), as `duet serve` and the window read it
    p.add_argument("--remote", metavar="URL", help="OpenAI-compatible server (e.g. http://127.0.0.1:8080/v1)")
    p.add_argument("--remote-model", default="", metavar="NAME",
                   help="model name to send to the remote server (default: the one it lists in /v1/models)")
    p.add_argument("--api-key-env", default="DUET_API_KEY", help="environment variable holding the API key")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run`` on the ``duet`` command's sub-parsers."""
    from app.core.config import SessionConfig, add_arguments

    r = subparsers.add_parser("run", help="watch a source headless and print replies")
    r.add_argument("--source", required=True, help="FILE | camera[:N] | screen[:N] | region:X,Y,W,H | window:TITLE")
    add_backend_args(r)
    r.add_argument("--ask", action="append", default=[], help="a question asked at the start")
    r.add_argument("--ask-at", action="append", default=[], type=_timed_question, metavar="SECONDS:QUESTION",
                   help="a question asked at a video time")
    add_arguments(r, SessionConfig, ("interval", "frames_per_turn", "tokens_per_frame", "talkativeness",
                                     "max_new_tokens", "max_turns", "cadence"))
    r.add_argument("--fast", action="store_true",
                   help="video files: feed every frame as fast as possible (evaluation) instead of real time")
    r.add_argument("--jsonl", help="write every step (decision, text, timings, context) here")
    r.add_argument("--verbose", action="store_true", help="also print silent steps")
    r.add_argument("--save-session", action="store_true",
                   help="save the session as the app does (Sessions tab, `duet sessions`) and print its id")
    r.set_defaults(func=cmd_run)
