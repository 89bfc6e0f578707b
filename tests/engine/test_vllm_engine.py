"""``duet serve --engine vllm``: the command line Duet builds, the supervision, and the OpenAI-speaking path.

The supervision runs on a stand-in for ``vllm serve`` (tests/engine/vllm_standin.py: a real HTTP server on the
port Duet chose, that records its command line and crashes or hangs on demand), because vLLM itself needs an
environment of its own that CI does not install; tests/engine/test_vllm_real.py runs vLLM when it is there.
The prefix-cache-friendly remote backend is checked against the real ``duet serve`` guard and llama.cpp on the
bundled demo model: deciding from the first token must give exactly the decisions and replies of decoding in full.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.core.errors import InputError
from app.engine import vllm_engine
from app.engine.remote_backend import RemoteBackend
from app.engine.vllm_engine import (
    VllmSettings,
    VllmSupervisor,
    check_checkpoint,
    find_vllm,
    vllm_command,
    vllm_environment,
)
from app.engine.vllm_metrics import PrefixCache, metrics_url, parse_prefix_cache
from app.engine.vllm_remote import VllmRemoteBackend, first_token_margin, is_quiet_token
from tests.engine.loopback import free_port

KEY = "v" * 32
REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("vllm_standin.py")


def test_the_command_line_asks_for_what_mmduet2_needs_and_holds_no_key():
    s = VllmSettings(model="/models/demo-hd32", alias="demo-hd32", host="127.0.0.1", port=8123, dtype="float32",
                     enforce_eager=True, extra=("--max-num-seqs=16",))
    cmd = vllm_command(["/env/bin/vllm"], s)
    assert cmd[:3] == ["/env/bin/vllm", "serve", "/models/demo-hd32"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--port"] == "8123" and flags["--served-model-name"] == "demo-hd32" and flags["--dtype"] == "float32"
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 256, "video": 0}
    assert cmd[cmd.index("--generation-config") + 1] == "vllm"  # not the checkpoint's repetition penalty
    assert "--enable-prefix-caching" in cmd and "--enforce-eager" in cmd and cmd[-1] == "--max-num-seqs=16"
    assert not any(KEY in c for c in cmd)
    env = vllm_environment(KEY, {"PATH": "/bin"})
    assert env["VLLM_API_KEY"] == KEY and env["VLLM_NO_USAGE_STATS"] == "1" and env["PATH"] == "/bin"
    assert vllm_environment(KEY, {"VLLM_CPU_KVCACHE_SPACE": "8"})["VLLM_CPU_KVCACHE_SPACE"] == "8"


def _checkpoint(folder: Path, hidden: int, heads: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"],
                                                    "text_config": {"hidden_size": hidden,
                                                                    "num_attention_heads": heads}}))
    return folder


def test_a_head_size_the_cpu_kernels_lack_is_refused_before_minutes_of_starting(tmp_path):
    demo = _checkpoint(tmp_path / "demo", 64, 4)  # the bundled demo's geometry: head size 16
    problem = check_checkpoint(str(demo), cpu=True)
    assert "head size 16" in problem and "models/recipes/demo-hd32.toml" in problem
    assert check_checkpoint(str(demo), cpu=False) is None  # GPU builds have other kernels
    assert check_checkpoint(str(_checkpoint(tmp_path / "hd32", 64, 2)), cpu=True) is None
    assert "no such folder" in check_checkpoint(str(tmp_path / "missing"), cpu=True)
    (tmp_path / "empty").mkdir()
    assert "not a Hugging Face checkpoint folder" in check_checkpoint(str(tmp_path / "empty"), cpu=True)
    assert check_checkpoint("wangyueqian/MMDuet2", cpu=True) is None  # a Hub id: vLLM's to fetch


def test_the_vllm_executable_is_found_or_its_install_command_said(tmp_path, monkeypatch):
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    exe = env / "bin" / "vllm"
    exe.write_text("#!/bin/sh\n")
    with pytest.raises(InputError, match="not a vllm executable"):
        find_vllm(str(exe))
    exe.chmod(0o755)
    assert find_vllm(str(env)) == [str(exe)] and find_vllm(str(exe)) == [str(exe)]
    monkeypatch.setenv("DUET_VLLM", str(env))
    assert find_vllm() == [str(exe)]
    monkeypatch.delenv("DUET_VLLM")
    monkeypatch.setattr(vllm_engine, "DEFAULT_ENV", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(InputError, match="installer/vllm_env.sh"):
        find_vllm()


def test_the_prefix_cache_counters_are_read_from_prometheus_text():
    text = ("# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.\n"
            "# TYPE vllm:prefix_cache_queries_total counter\n"
            'vllm:prefix_cache_queries_total{engine="0",model_name="demo-hd32"} 1200.0\n'
            'vllm:prefix_cache_queries_total{engine="1",model_name="demo-hd32"} 800.0\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="demo-hd32"} 1500.0\n'
            'vllm:prefix_cache_hits_created{engine="0"} 1.7e9\n'
            'vllm:num_requests_running{engine="0"} 2.0\n')
    now = parse_prefix_cache(text)
    assert now == PrefixCache(hits=1500.0, queries=2000.0) and now.hit_rate == 0.75
    assert (now - PrefixCache(hits=500.0, queries=1000.0)).hit_rate == 1.0
    assert parse_prefix_cache("python_gc_objects_collected_total 3\n") is None
    assert PrefixCache().hit_rate is None
    assert metrics_url("http://gpu-box:8000/v1") == "http://gpu-box:8000/metrics"


def test_the_first_token_decides_silence():
    assert is_quiet_token("NO") and is_quiet_token("") and is_quiet_token("<|im_end|>") and is_quiet_token("NO REPLY")
    assert not is_quiet_token("A") and not is_quiet_token(" red") and not is_quiet_token("O")
    assert not is_quiet_token("\t") and not is_quiet_token(" NO")  # whitespace speaks (a random model does)
    choice = {"logprobs": {"content": [{"token": "A", "top_logprobs": [
        {"token": "A", "logprob": -0.1}, {"token": "NO", "logprob": -2.5}, {"token": "The", "logprob": -4.0}]}]}}
    assert first_token_margin(choice) == pytest.approx(2.4)
    assert first_token_margin({"logprobs": None}) is None


# --- supervision, on the stand-in --------------------------------------------------------------------------------

@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The stand-in as an executable (as ``vllm`` is), and the file it records each start in."""
    exe = tmp_path / "vllm"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} \"$@\"\n")
    exe.chmod(0o755)
    record = tmp_path / "starts.jsonl"
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    return exe, record


def starts(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def supervisor(exe: Path, env: dict[str, str] | None = None, **kw) -> tuple[VllmSupervisor, int]:
    port = free_port()
    cmd = vllm_command([str(exe)], VllmSettings(model="/m/demo-hd32", alias="demo-hd32", port=port))
    return VllmSupervisor(cmd, vllm_environment(KEY, env), f"http://127.0.0.1:{port}", KEY, **kw), port


def wait(condition, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def models(port: int, key: str = KEY) -> tuple[int, object]:
    return vllm_engine.get_json(f"http://127.0.0.1:{port}/v1/models", key)


def test_vllm_gets_the_key_by_environment_and_is_started_again_after_a_crash(standin, capsys):
    exe, record = standin
    sup, port = supervisor(exe)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    runner.start()
    try:
        wait(lambda: sup.starts == 1 and sup.healthy(), "the first start answers")
        assert models(port)[0] == 200 and models(port, "wrong")[0] == 401
        first = starts(record)[0]
        assert first["key"] == KEY and not any(KEY in a for a in first["argv"])
        os.kill(first["pid"], signal.SIGKILL)  # a native crash in the engine
        wait(lambda: len(starts(record)) == 2 and sup.healthy(), "started again and answering")
        assert sup.starts == 2 and models(port)[1]["data"][0]["id"] == "demo-hd32"
    finally:
        sup.stop()
        runner.join(30)
    assert result == [0] and sup.child.poll() is not None
    err = capsys.readouterr().err
    assert "vLLM was killed by signal 9" in err and "restarting vLLM" in err


def test_a_vllm_that_stops_answering_is_stopped_and_started_again(standin, monkeypatch, capsys):
    exe, record = standin
    monkeypatch.setenv("STANDIN_MODE", "hang")
    monkeypatch.setenv("STANDIN_HEALTHY", "2")  # the start-up check and one more, then 500s
    sup, _ = supervisor(exe, health_interval=0.2, health_failures=2)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        wait(lambda: len(starts(record)) >= 2, "a hung vLLM is restarted")
    finally:
        sup.stop()
        runner.join(30)
    assert "vLLM stopped answering /health (2 checks, 0.2 s apart); stopping it" in capsys.readouterr().err


def test_a_vllm_that_keeps_crashing_ends_the_service(standin, monkeypatch, capsys):
    exe, record = standin
    monkeypatch.setenv("STANDIN_MODE", "crash")
    sup, _ = supervisor(exe)
    assert sup.run() == 1
    assert len(starts(record)) == vllm_engine.MAX_RESTARTS + 1
    err = capsys.readouterr().err
    assert "vLLM exited with status 1" in err and f"failed {vllm_engine.MAX_RESTARTS + 1} times" in err


def _duet(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=REPO, text=True,
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)


def test_duet_serve_engine_vllm_starts_it_with_the_served_name_and_stops_it_on_sigterm(standin, tmp_path):
    exe, record = standin
    model = _checkpoint(tmp_path / "demo-hd32", 64, 2)
    port = free_port()
    proc = _duet("--engine", "vllm", "--vllm", str(exe), "--model", str(model), "--port", str(port),
                 env={"DUET_SERVE_API_KEY": KEY})
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "vLLM answers on" in line:
                break
        assert any(f"as 'demo-hd32' on http://127.0.0.1:{port}/v1 with vLLM" in ln for ln in lines), lines
        status, listing = models(port)
        assert status == 200 and listing["data"][0]["id"] == "demo-hd32"
        assert starts(record)[0]["key"] == KEY
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert vllm_engine.get_json(f"http://127.0.0.1:{port}/health", KEY)[0] == 0  # vLLM went with it


def test_duet_serve_engine_vllm_refuses_a_gguf_library_name_with_the_fix(standin):
    exe, _ = standin
    proc = _duet("--engine", "vllm", "--vllm", str(exe), env={"DUET_SERVE_API_KEY": KEY})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "serves Hugging Face checkpoints" in err and "demo-hd32.toml" in err


def test_the_llama_servers_guard_flags_are_refused_with_vllm_rather_than_ignored(standin, tmp_path):
    exe, record = standin
    model = _checkpoint(tmp_path / "demo-hd32", 64, 2)
    proc = _duet("--engine", "vllm", "--vllm", str(exe), "--model", str(model), "--cors-origin", "https://a.org",
                 "--allow-urls", env={"DUET_SERVE_API_KEY": KEY})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "--allow-urls, --cors-origin: only for --engine llama" in err
    assert not record.exists()  # nothing was started


# --- the OpenAI-speaking path, on the real duet serve and llama.cpp ---------------------------------------------

@pytest.fixture(scope="module")
def demo_server(bundled_demo_model):
    """``duet serve``'s guard and llama.cpp on the bundled demo, behind a recorder of what each request sent."""
    from app.engine.serve import ServePolicy, create_server_app, secure
    from tests.engine.loopback import serve_asgi

    model, mmproj = bundled_demo_model
    guard = secure(create_server_app(model, mmproj, n_ctx=8192, n_gpu_layers=0, alias="demo"),
                   ServePolicy(api_key=KEY, alias="demo"))
    seen: list[tuple[dict, dict]] = []

    async def recorder(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await guard(scope, receive, send)
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        seen.append(({k.decode(): v.decode() for k, v in scope["headers"]}, json.loads(body)))
        replayed = [False]

        async def replay():
            if replayed[0]:
                return await receive()
            replayed[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await guard(scope, replay, send)

    with serve_asgi(recorder) as base:
        yield f"{base}/v1", seen


def play(backend: RemoteBackend, turns) -> list[tuple[bool, str]]:
    out = []
    for i, frames in enumerate(turns):
        step = backend.step(frames, "Tell me when a new shape appears." if i == 0 else "", max_new_tokens=24)
        out.append((step.silent, step.text))
    return out


def test_deciding_from_the_first_token_decides_as_decoding_in_full(demo_server, monkeypatch):
    """Up to the first reply: after it, the two histories differ, since llama-cpp-python's template closes a
    trailing assistant turn instead of continuing it (vLLM continues it: tests/engine/test_vllm_real.py compares
    the texts on vLLM itself)."""
    from app.eval.synthetic import make_video

    base, seen = demo_server
    monkeypatch.setenv("DUET_API_KEY", KEY)
    video = make_video("appear", "easy", 0, seed=7)  # held out: never trained on
    turns = [[video.frame_at(t), video.frame_at(t + 1.0)] for t in range(0, int(video.duration) - 1, 2)]
    full = play(RemoteBackend(base, model="demo"), turns)
    first_reply = next(i for i, (silent, _) in enumerate(full) if not silent)
    seen.clear()
    vb = VllmRemoteBackend(base, model="demo", session_id="viewer-7")
    early = play(vb, turns[:first_reply + 1])
    assert [s for s, _ in early] == [s for s, _ in full[:first_reply + 1]]
    assert all(text == "NO REPLY" for _, text in early[:first_reply])
    assert early[-1][1][:1] == full[first_reply][1][:1]  # the same first token, then the continuation
    assert vb.requests == len(seen) == first_reply + 2  # one request per silent step, two for the reply
    assert all(h.get("x-session-id") == "viewer-7" and b["user"] == "viewer-7" for h, b in seen)
    firsts = [b for _, b in seen if b["max_tokens"] == 1]
    assert len(firsts) == first_reply + 1 and all(b["logprobs"] and b["top_logprobs"] == 5 for b in firsts)
    # append-only: each request's history is the previous request's, extended (the prefix cache's condition)
    for a, b in zip(firsts, firsts[1:], strict=False):
        assert b["messages"][:len(a["messages"])] == a["messages"]
    assert firsts[0]["messages"][0]["role"] == "system"
    (_, cont), = [(h, b) for h, b in seen if b["max_tokens"] != 1]
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    assert cont["messages"][-1]["role"] == "assistant" and cont["max_tokens"] == 23
    assert vb.last_margin is None or vb.last_margin > 0  # it spoke: speaking beat silence


def test_a_forced_reply_asks_to_continue_the_prefilled_turn(demo_server, monkeypatch):
    from app.eval.synthetic import make_video

    base, seen = demo_server
    monkeypatch.setenv("DUET_API_KEY", KEY)
    video = make_video("colour", "easy", 1, seed=7)
    seen.clear()
    VllmRemoteBackend(base, model="demo").step([video.frame_at(0.0), video.frame_at(1.0)], "What is there?",
                                               must_reply=True, max_new_tokens=16)
    # (what the model then says is vLLM's to continue: llama-cpp-python's template closes the prefilled turn)
    (_, body), = seen
    assert body["messages"][-1] == {"role": "assistant", "content": "I must reply.\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
