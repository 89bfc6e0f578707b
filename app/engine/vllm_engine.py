"""vLLM as ``duet serve``'s engine for many viewers: the command line Duet builds, and a supervisor for it.

llama.cpp (``duet serve --engine llama``, the default) answers one chat at a time from one context. vLLM batches
many chats on one model and keeps a prefix cache that reuses each viewer's history (image-hash aware), which is
what a household or a lab serving many viewers from one GPU box needs. Duet does not reimplement vLLM: it starts
``vllm serve`` as a child process with the settings MMDuet2 needs, hands it the API key by environment (never on a
command line, where ``ps`` would show it), waits until it answers, and starts it again after a crash, as the
llama.cpp server's supervisor does (app/cli/serve.py). More than :data:`MAX_RESTARTS` crashes within
:data:`RESTART_WINDOW_S` seconds end the service.

vLLM lives in an environment of its own (``installer/vllm_env.sh``): its PyTorch and transformers pins differ from
the project's. Nothing here imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from app.core.errors import InputError

MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0
DEFAULT_ENV = Path.home() / ".cache" / "duet" / "vllm-env"  # where installer/vllm_env.sh puts it by default
# vLLM's CPU attention kernels (vllm/v1/attention/backends/cpu_attn.py, 0.32: get_supported_head_sizes).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@dataclass(frozen=True)
class VllmSettings:
    """What Duet asks of ``vllm serve``; every field becomes a flag in :func:`vllm_command`."""

    model: str  # a Hugging Face checkpoint folder (or a Hub id, which vLLM downloads)
    alias: str  # the name clients see in /v1/models and must send as ``model``
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"  # bf16 on a GPU; ``float32`` keeps the tiny demo's decisions close to llama.cpp's
    max_model_len: int = 8192
    # per request, and a request holds the whole dialogue: every frame so far (vLLM refuses more with a 400).
    # 256 frames fill 4096 tokens at the demo's 16 a frame, and 32k at MMDuet2's 128.
    max_images: int = 256
    max_logprobs: int = 20  # the first-token decision asks for the top few
    enforce_eager: bool = False  # skip torch.compile: minutes less to start on a small CPU, slower steps
    extra: tuple[str, ...] = ()  # anything else, passed through as written (after the flags above)


def vllm_command(executable: Sequence[str], s: VllmSettings) -> list[str]:
    """The ``vllm serve`` command line for ``s`` (the API key is not in it: :func:`vllm_environment`).

    * ``--enable-prefix-caching``: each viewer's dialogue only grows, so its history is a cached prefix;
    * ``--limit-mm-per-prompt``: images only (frames are separate images in MMDuet2's protocol), no video item,
      which also keeps vLLM from profiling its memory with the largest video at start; the limit counts every
      image of a request, and each request carries the whole dialogue, so it is the frames a stream may hold;
    * ``--generation-config vllm``: vLLM's neutral sampling defaults, not the checkpoint's
      ``generation_config.json`` (Qwen's ships a repetition penalty; the protocol decodes greedily, without);
    * ``--max-logprobs``: the first-token decision reads the top logprobs.
    """
    cmd = [*executable, "serve", s.model, "--host", s.host, "--port", str(s.port),
           "--served-model-name", s.alias, "--dtype", s.dtype, "--max-model-len", str(s.max_model_len),
           "--enable-prefix-caching", "--limit-mm-per-prompt", json.dumps({"image": s.max_images, "video": 0}),
           "--generation-config", "vllm", "--max-logprobs", str(s.max_logprobs)]
    if s.enforce_eager:
        cmd.append("--enforce-eager")
    return cmd + list(s.extra)


def vllm_environment(key: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the key (``VLLM_API_KEY``, which ``vllm serve`` enforces like ``--api-key``),
    no usage statistics sent anywhere, no Hub look-ups unless the user allows them, and on a CPU build a KV cache
    size that fits a desktop (1 GiB unless ``VLLM_CPU_KVCACHE_SPACE`` says otherwise)."""
    env = dict(os.environ if base is None else base)
    env["VLLM_API_KEY"] = key
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def find_vllm(explicit: str | None = None) -> list[str]:
    """The ``vllm`` executable: ``--vllm PATH``, else ``$DUET_VLLM``, else the one installer/vllm_env.sh made,
    else ``vllm`` on the PATH; :class:`InputError` with the install command when there is none."""
    for candidate in (explicit, os.environ.get("DUET_VLLM")):
        if candidate:
            p = Path(candidate).expanduser()
            if p.is_dir():
                p = p / "bin" / "vllm"
            if not (p.is_file() and os.access(p, os.X_OK)):
                raise InputError(f"{candidate}: not a vllm executable (nor an environment with bin/vllm)")
            return [str(p)]
    own = DEFAULT_ENV / "bin" / "vllm"
    if own.is_file():
        return [str(own)]
    found = shutil.which("vllm")
    if found:
        return [found]
    raise InputError("vLLM is not installed: `bash installer/vllm_env.sh` installs its CPU build in "
                     f"{DEFAULT_ENV} (or GPU=cuda for the GPU build); or name one with --vllm PATH")


def check_checkpoint(model: str, cpu: bool) -> str | None:
    """A problem with ``model`` that vLLM would only report after minutes of starting, or None.

    A folder must hold a ``config.json``; on vLLM's CPU build its text model's head size must be one the CPU
    attention kernels have (:data:`CPU_HEAD_SIZES`): the bundled demo's is 16, hence the demo variant with 32
    (models/recipes/demo-hd32.toml). A Hub id is vLLM's to fetch and is not checked here.
    """
    path = Path(model).expanduser()
    if not path.exists():
        return None if "/" in model and not model.startswith((".", "/", "~")) else f"{model}: no such folder"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        return f"{model}: not a Hugging Face checkpoint folder ({e})"
    text = config.get("text_config", config)
    heads = int(text.get("num_attention_heads") or 1)
    head = int(text.get("head_dim") or int(text.get("hidden_size") or 0) // heads)
    if cpu and head not in CPU_HEAD_SIZES:
        return (f"{model}: head size {head}, which vLLM's CPU attention does not support "
                f"({', '.join(map(str, CPU_HEAD_SIZES))}). For the demo, train the variant with head size 32: "
                "duet train demo models/recipes/demo-hd32.toml")
    return None


def get_json(url: str, key: str, timeout: float = 5.0) -> tuple[int, object]:
    """GET ``url`` with the key: (status, JSON or text); status 0 when nothing answered."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (http(s) URLs the user gave)
            raw = r.read(4 * 1024 * 1024).decode("utf-8", "replace")
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, e.read(4096).decode("utf-8", "replace")
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


class VllmSupervisor:
    """Runs ``vllm serve`` as a child (its own process group, so its engine and worker processes go with it),
    says when it answers, and starts it again after a crash or when it stops answering ``/health``."""

    def __init__(self, command: Sequence[str], env: dict[str, str], base_url: str, key: str, *,
                 log: TextIO | None = None, ready_timeout: float = 900.0, health_interval: float = 5.0,
                 health_failures: int = 3, on_ready: Callable[[], None] | None = None) -> None:
        self.command, self.env, self.key = list(command), env, key
        self.base_url = base_url.rstrip("/")
        self.log, self.ready_timeout = log, ready_timeout
        self.health_interval, self.health_failures = health_interval, health_failures
        self.on_ready = on_ready
        self.child: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._hung = threading.Event()

    def _say(self, message: str) -> None:
        print(f"duet serve: {message}", file=self.log or sys.stderr, flush=True)

    def _spawn(self) -> subprocess.Popen:
        self.starts += 1
        self._hung.clear()
        return subprocess.Popen(self.command, env=self.env, start_new_session=True)

    def healthy(self) -> bool:
        """Whether the server answers ``/health`` with 200 (vLLM's liveness endpoint; the engine core included)."""
        return get_json(f"{self.base_url}/health", self.key, timeout=min(5.0, self.health_interval * 2))[0] == 200

    def wait_ready(self, child: subprocess.Popen) -> bool:
        """Poll until the child answers (True), exits or the start-up limit passes (False; the child is stopped)."""
        deadline = time.monotonic() + self.ready_timeout
        while not self._stopping.is_set():
            if child.poll() is not None:
                return False
            if self.healthy():
                return True
            if time.monotonic() > deadline:
                self._say(f"vLLM did not answer within {self.ready_timeout:.0f} s of starting; stopping it")
                self._terminate(child)
                return False
            self._stopping.wait(0.5)
        return False

    def _watch(self, child: subprocess.Popen) -> None:
        """After start: a server that stops answering ``/health`` for ``health_failures`` checks in a row is hung
        (an engine stuck in a kernel); it is stopped, and :meth:`run` starts it again."""
        misses = 0
        while not self._stopping.wait(self.health_interval) and child.poll() is None:
            misses = 0 if self.healthy() else misses + 1
            if misses >= self.health_failures:
                self._say(f"vLLM stopped answering /health ({misses} checks, {self.health_interval:g} s apart); "
                          "stopping it")
                self._hung.set()
                self._terminate(child)
                return

    def _terminate(self, child: subprocess.Popen, grace: float = 20.0) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def stop(self) -> None:
        """Stop the service (from a signal handler or another thread): the child and its processes end."""
        self._stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            threading.Thread(target=self._terminate, args=(child,), daemon=True).start()

    def run(self) -> int:
        """Serve until :meth:`stop` (0) or until it crashed more than :data:`MAX_RESTARTS` times in
        :data:`RESTART_WINDOW_S` seconds (1)."""
        crashes: list[float] = []
        while not self._stopping.is_set():
            self.child = child = self._spawn()
            if self.wait_ready(child):
                self._say(f"vLLM answers on {self.base_url}/v1 (start {self.starts})")
                if self.on_ready is not None:
                    self.on_ready()
                watcher = threading.Thread(target=self._watch, args=(child,), daemon=True)
                watcher.start()
            rc = child.wait()
            if self._stopping.is_set():
                return 0
            now = time.monotonic()
            crashes = [t for t in crashes if now - t < RESTART_WINDOW_S] + [now]
            why = "stopped answering" if self._hung.is_set() else (
                f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}")
            self._say(f"vLLM {why}")
            if len(crashes) > MAX_RESTARTS:
                self._say(f"vLLM failed {len(crashes)} times in {RESTART_WINDOW_S:.0f} s; stopping. Its messages "
                          "above say why (a model it cannot load, memory, a port in use)")
                return 1
            self._say("restarting vLLM; requests in flight were lost, new ones are refused until it answers")
        return 0
