"""``duet serve``: one model behind an OpenAI-compatible endpoint for other machines (``--remote``).

The command is a supervisor, as Ollama's server is over its runners: it checks the flags, binds the port and
reads the API key, then runs the server and its llama.cpp in a child process (the same command with
``--worker-fd``), handing it the listening socket. A native fault in llama.cpp (SIGILL, SIGSEGV, an abort, the
out-of-memory killer) ends that child, not the service: the supervisor says what happened in words and starts
it again, on the safe settings where the crash suggests them (CPU only, portable kernels). The socket stays
open meanwhile, so new clients wait in its backlog instead of being refused. More than
:data:`MAX_RESTARTS` crashes within :data:`RESTART_WINDOW_S` seconds end the service with exit status 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a port already in use is said at once, not after
    a minute of loading, and ``--port 0`` prints the port the kernel chose."""
    from app.core.errors import InputError

    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise InputError(f"--host {host}: {e.strerror or e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}. Choose another --port, "
                         "or stop the program that uses it.") from e
    return sock


MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0
_WORKER_ARGS = "DUET_SERVE_WORKER_ARGS"  # the supervisor's checked flags, as JSON, for its child


def supervise(sock: socket.socket, a: argparse.Namespace, key: str) -> int:
    """Run the server in a child process holding ``sock``, and start it again after a crash (module docstring)."""
    import json
    import os
    import signal
    import subprocess
    import time

    from app.engine.engine_process import app_command, describe_exit, fallback_for

    args = {k: v for k, v in vars(a).items() if k != "func"}
    crashes: list[float] = []
    env = dict(os.environ, DUET_SERVE_API_KEY=key)  # the key by environment, never on a command line
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # llama.cpp's threads wait passively (app/modelhub/llama_lib.py)
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            env[_WORKER_ARGS] = json.dumps(args)
            child = subprocess.Popen(app_command("serve", "--worker-fd", str(sock.fileno())), env=env,
                                     pass_fds=(sock.fileno(),))
            rc = child.wait()
            if rc >= 0 or -rc in (signal.SIGINT, signal.SIGTERM):
                return 0 if rc in (0, -signal.SIGINT, -signal.SIGTERM) else rc
            name, message = describe_exit(rc)
            now = time.monotonic()
            crashes = [t for t in crashes if now - t < RESTART_WINDOW_S] + [now]
            safe = fallback_for(name)
            print(f"duet serve: {message.split(' The session')[0]}",
                  file=sys.stderr, flush=True)
            if len(crashes) > MAX_RESTARTS:
                print(f"duet serve: the server crashed {len(crashes)} times in {RESTART_WINDOW_S:.0f} s; stopping. "
                      "`duet doctor` checks this computer.", file=sys.stderr)
                return 1
            if "n_gpu_layers" in safe:
                args["n_gpu_layers"] = 0
            if "cpu_variant" in safe:
                env["DUET_CPU_VARIANT"] = safe["cpu_variant"]
            print(f"duet serve: restarting the server ({'CPU only, portable kernels' if safe else 'same settings'}); "
                  "requests in flight were lost, new ones wait meanwhile", file=sys.stderr, flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def served_name(spec: str) -> str:
    """The name the server gives its model when ``--alias`` is not given: what the user called it.

    A library name (``demo``, ``mmduet2``, one of your own) or ``tiny`` is kept; a GGUF path becomes its file's
    stem. Clients see it in ``/v1/models`` and must send it as ``model``: a client that expects another
    model learns that it is talking to this one, instead of every server calling itself ``mmduet2``.
    """
    from app.modelhub.library import ModelLibrary

    if spec == "tiny" or ModelLibrary().get(spec) is not None:
        return spec
    return Path(spec).stem


def cmd_serve(a: argparse.Namespace) -> int:
    import os

    from app.core.errors import InputError
    from app.engine.serve import (
        check_api_key,
        default_key_file,
        load_or_create_api_key,
        parse_networks,
    )
    from app.modelhub.library import resolve_model
    from app.modelhub.validate import check_pair

    if a.allow_files and not Path(a.allow_files).is_dir():
        raise InputError(f"--allow-files {a.allow_files}: not a folder")
    bad_origin = next((o for o in a.cors_origin if not o.startswith(("http://", "https://")) or o.count("/") != 2), None)
    if bad_origin is not None:  # '*' would let any web page the user visits call the server from their browser
        raise InputError(f"--cors-origin {bad_origin!r}: name each allowed origin as scheme://host[:port], "
                         "e.g. https://app.example.org ('*' is not accepted)")
    url_networks = parse_networks(a.allow_url_net)
    if url_networks and not a.allow_urls:
        raise InputError("--allow-url-net only widens --allow-urls; add --allow-urls")
    if a.worker_fd is not None:
        return _serve_worker(a)
    if a.engine == "vllm":  # many viewers: vLLM, started and supervised (app/engine/vllm_serve.py)
        from app.engine.vllm_serve import serve_vllm

        return serve_vllm(a)
    model, mmproj = resolve_model(a.model, a.mmproj)
    check_pair(model, mmproj)  # a wrong pair is said here, before the port and the key
    a.alias = a.alias or served_name(a.model)
    sock = listen_socket(a.host, a.port)
    port = sock.getsockname()[1]
    key_file = Path(a.api_key_file) if a.api_key_file else default_key_file()
    if os.environ.get("DUET_SERVE_API_KEY"):
        key, new = os.environ["DUET_SERVE_API_KEY"], False
        check_api_key(key, "DUET_SERVE_API_KEY", "set another")
    else:
        key, new = load_or_create_api_key(key_file)
    print(f"serving {model.name} as '{a.alias}' on http://{a.host}:{port}/v1", file=sys.stderr)
    if new:
        print(f"new API key (stored in {key_file}, readable by you only):\n    {key}\n"
              f"clients: DUET_API_KEY={key} duet run --remote http://HOST:{port}/v1 …", file=sys.stderr)
    elif not os.environ.get("DUET_SERVE_API_KEY"):
        print(f"API key: the one stored in {key_file}", file=sys.stderr)
    a.model, a.mmproj, a.port = str(model), str(mmproj), port
    if a.in_process:
        with sock:
            return _run_server(a, sock, key, url_networks)
    with sock:
        return supervise(sock, a, key)


def _serve_worker(a: argparse.Namespace) -> int:
    """The child :func:`supervise` starts: the supervisor's flags, its socket, the key from the environment."""
    import json
    import os

    from app.engine.serve import parse_networks

    for k, v in json.loads(os.environ.pop(_WORKER_ARGS)).items():
        if k != "worker_fd":
            setattr(a, k, v)
    key = os.environ.pop("DUET_SERVE_API_KEY")
    _exit_with_parent()
    sock = socket.socket(fileno=a.worker_fd)
    with sock:
        return _run_server(a, sock, key, parse_networks(a.allow_url_net))


def _exit_with_parent() -> None:
    """The server child ends when its supervisor is gone, however it went (a SIGKILL too): left running, it would
    hold the port and answer with nobody to restart or stop it. It has no pipe to the supervisor to notice by, so
    a daemon thread looks at its parent once a second (portable, unlike Linux's PR_SET_PDEATHSIG)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)  # the supervisor died: nothing is left to hand the socket to; uvicorn's threads go with us

    threading.Thread(target=watch, name="duet-serve-parent", daemon=True).start()


def _run_server(a: argparse.Namespace, sock: socket.socket, key: str, url_networks: object) -> int:
    import uvicorn

    from app.core.config import resolve_threads
    from app.engine.serve import ServePolicy, create_server_app

    policy = ServePolicy(api_key=key, alias=a.alias, allow_files=Path(a.allow_files) if a.allow_files else None,
                         allow_urls=a.allow_urls, url_networks=url_networks, cors_origins=tuple(a.cors_origin),
                         max_body_mb=a.max_body_mb, max_tokens=a.max_tokens, generation_timeout=a.generation_timeout,
                         queue_timeout=a.generation_timeout, tokens_per_image=a.tokens_per_image)
    app = create_server_app(a.model, a.mmproj, n_ctx=a.n_ctx, n_gpu_layers=a.n_gpu_layers, alias=a.alias,
                            n_threads=resolve_threads(a.n_threads), policy=policy)
    from app.engine.serve_conn import uvicorn_options  # header deadline and per-address caps (slowloris)

    config = uvicorn.Config(app, host=a.host, port=a.port, log_level="warning", **uvicorn_options(policy))
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve`` on the ``duet`` command's sub-parsers."""
    from app.core.config import BACKEND_FLAGS, BackendSettings, add_arguments
    from app.engine.serve_policy import ServePolicy

    sv = subparsers.add_parser("serve", help="serve a model to other machines (OpenAI-compatible, for --remote)")
    sv.add_argument("--model", default="demo")
    sv.add_argument("--mmproj")
    sv.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to accept other machines")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--alias", help="the model's name for clients (default: --model's library name, or the "
                    "GGUF file's stem)")
    add_arguments(sv, BackendSettings, ("n_ctx", "n_threads", "n_gpu_layers", "gpu"), BACKEND_FLAGS)
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
    add_arguments(sv, ServePolicy, ("max_body_mb", "max_tokens", "tokens_per_image", "generation_timeout"),
                  {"generation_timeout": "--timeout"})
    sv.add_argument("--in-process", action="store_true",
                    help="run llama.cpp in this process (default: a supervised child, restarted after a crash)")
    sv.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # the supervised child's socket
    sv.add_argument("--engine", choices=("llama", "vllm"), default="llama",
                    help="llama: llama.cpp, one chat at a time (the default); vllm: vLLM for many viewers, started "
                    "and restarted by Duet (--model names a Hugging Face checkpoint folder; docs/scaling.md)")
    sv.add_argument("--engine-url", metavar="URL", help="with --engine vllm: watch a vLLM already running at URL "
                    "(started with the same key) instead of starting one")
    sv.add_argument("--vllm", metavar="PATH", help="the vllm executable or its environment (default: $DUET_VLLM, "
                    "then the one installer/vllm_env.sh made, then vllm on the PATH)")
    sv.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                    help="an extra flag for vllm serve, as --vllm-arg=--dtype=float32 (repeatable)")
    sv.set_defaults(func=cmd_serve)
