"""vLLM itself behind ``duet serve --engine vllm``, when its environment is installed (``make vllm``).

Skipped with the reason otherwise: vLLM's CPU build is an environment of its own (3.5 GB, about 3 minutes to
install on 2 cores) that `make test` and CI do not install, and its server takes 2–3 minutes to start there.
``DUET_VLLM_MODEL`` names the Hugging Face checkpoint to serve: one whose head size vLLM's CPU attention takes,
e.g. the demo variant (``duet train demo models/recipes/demo-hd32.toml``; bench/serve_engines.py makes the
checkpoint of its GGUF as ``.cache/bench-serve-engines/demo-hd32-hf``).

What it checks, on the real server: the key is enforced, the served name is the one Duet gave, deciding from the
first token gives exactly the texts and decisions of decoding in full on the same server (vLLM continues a
prefilled assistant turn), a second viewer's identical history is found in the prefix cache, and a crash of
vLLM's engine is survived (the supervisor starts it again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.errors import InputError
from app.engine.remote_backend import RemoteBackend
from app.engine.vllm_engine import find_vllm, get_json
from app.engine.vllm_metrics import read_prefix_cache
from app.engine.vllm_remote import VllmRemoteBackend, remote_backend

KEY = "r" * 32
REPO = Path(__file__).resolve().parents[2]


def _vllm() -> list[str]:
    try:
        return find_vllm()
    except InputError as e:
        pytest.skip(f"vLLM is not installed ({e})")


@pytest.fixture(scope="module")
def server():
    exe = _vllm()
    model = os.environ.get("DUET_VLLM_MODEL")
    if not model or not Path(model, "config.json").is_file():
        pytest.skip("DUET_VLLM_MODEL does not name a Hugging Face checkpoint folder (see this module's docstring)")
    env = {**os.environ, "DUET_SERVE_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--engine", "vllm", "--vllm", exe[0],
                             "--model", model, "--alias", "served-demo", "--port", "0",
                             "--vllm-arg=--dtype=float32", "--vllm-arg=--enforce-eager",
                             "--vllm-arg=--max-model-len=4096"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    base = None
    deadline = time.monotonic() + 900
    for line in proc.stderr:
        if "vLLM answers on " in line:
            base = line.split("vLLM answers on ")[1].split()[0]
            break
        assert time.monotonic() < deadline, "vLLM did not start"
    assert base, "duet serve --engine vllm ended before vLLM answered"
    try:
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def turns(n: int):
    from app.eval.synthetic import make_video

    v = make_video("appear", "easy", 0, seed=7)
    return v.question, [[v.frame_at(2.0 * k), v.frame_at(2.0 * k + 1.0)] for k in range(n)]


def test_the_key_and_the_served_name(server, monkeypatch):
    base, _ = server
    assert get_json(f"{base}/models", "wrong")[0] == 401
    status, listing = get_json(f"{base}/models", KEY)
    assert status == 200 and [m["id"] for m in listing["data"]] == ["served-demo"]
    monkeypatch.setenv("DUET_API_KEY", KEY)
    assert isinstance(remote_backend(base), VllmRemoteBackend)  # recognised by its model list


def test_the_first_token_decision_says_what_decoding_in_full_says_and_history_is_reused(server, monkeypatch):
    base, _ = server
    monkeypatch.setenv("DUET_API_KEY", KEY)
    question, frames = turns(8)

    def play(b):
        return [(s.silent, s.text) for s in (b.step(f, question if k == 0 else "", max_new_tokens=24)
                                             for k, f in enumerate(frames))]

    full = play(RemoteBackend(base, model="served-demo"))
    before = read_prefix_cache(base, KEY)
    early = play(VllmRemoteBackend(base, model="served-demo"))
    after = read_prefix_cache(base, KEY)
    assert early == full
    assert after is not None and (after - before).hit_rate > 0.5  # the same clip again: mostly cached


def test_a_crashed_vllm_is_started_again(server, monkeypatch):
    """vLLM and its engine processes killed at once (as the out-of-memory killer may): Duet starts it again."""
    base, proc = server
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "duet serve has no vLLM child"
    os.killpg(int(children[0]), signal.SIGKILL)  # its own process group: vllm serve, its engine, its worker
    health = f"{base.removesuffix('/v1')}/health"
    deadline = time.monotonic() + 900
    down = False
    while not (down and get_json(health, KEY)[0] == 200):
        down = down or get_json(health, KEY)[0] != 200
        assert time.monotonic() < deadline, "vLLM was not started again"
        assert proc.poll() is None, "duet serve ended instead of restarting vLLM"
        time.sleep(0.5)
    monkeypatch.setenv("DUET_API_KEY", KEY)
    question, frames = turns(1)
    assert VllmRemoteBackend(base, model="served-demo").step(frames[0], question).text
