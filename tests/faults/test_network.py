"""Fault catalogue, part 5: ``duet serve`` refusing bad setups, and ``duet run --remote`` against
servers that misbehave (real HTTP servers on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.engine.loopback import chat_reply, free_port, send_json, serve_http

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("extra", "env", "message"), [
    (["--allow-files", "/nonexistent/folder"], {}, "--allow-files /nonexistent/folder: not a folder"),
    (["--max-body-mb", "0"], {}, "--max-body-mb and --timeout must be > 0"),
    (["--timeout", "-1"], {}, "--max-body-mb and --timeout must be > 0"),
    (["--max-tokens", "0"], {}, "--max-tokens ≥ 1"),
    ([], {"DUET_SERVE_API_KEY": "short"}, "DUET_SERVE_API_KEY must be at least 16 characters"),
])
def test_serve_refuses_bad_settings(extra, env, message, run, data_dir, tiny_model, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = run("serve", "--model", tiny_model.model, "--mmproj", tiny_model.mmproj, *extra)
    assert (r.rc, message in r.err) == (2, True), r.err


def test_serve_refuses_a_swapped_pair(run, data_dir, tiny_model):
    r = run("serve", "--model", tiny_model.mmproj, "--mmproj", tiny_model.model)
    assert r.rc == 2 and "not the text model; swap the two files" in r.err


def test_serve_refuses_a_pair_that_does_not_belong_together(run, data_dir, tiny_model, tmp_path):
    from app.modelhub.tiny import TinySpec, build_tiny

    other = build_tiny(TinySpec(hidden=96, heads=4, kv_heads=2, ffn=256, mrope_section=[2, 5, 5]),
                       cache_dir=tmp_path / "other")
    r = run("serve", "--model", tiny_model.model, "--mmproj", other.mmproj)
    assert r.rc == 2 and "does not belong to" in r.err and "projects to 96 dimensions" in r.err


def test_duet_serve_end_to_end_generates_a_private_key_and_requires_it(tiny_model, tmp_path):
    port = free_port()
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    env.pop("DUET_SERVE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model), "--mmproj",
                             str(tiny_model.mmproj), "--port", str(port), "--gpu-layers", "0", "--n-ctx", "1024"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        key_file = tmp_path / "data" / "serve-api-key"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                pytest.fail("duet serve answered /v1/models without an API key")
            except urllib.error.HTTPError as e:
                assert e.code == 401
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        key = key_file.read_text().strip()
        assert key_file.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["data"][0]["id"] == "mmduet2"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"new API key (stored in {key_file}, readable by you only):\n    {key}" in err


# ---- duet run --remote against misbehaving servers -------------------------------------------------
def _garbage(h, rec):
    send_json(h, 200, b"\x00\xffnot json at all")


def _refuse(h, rec):
    send_json(h, 401, {"error": {"message": "invalid api key"}})


def _crash(h, rec):
    send_json(h, 500, b"Internal Server Error")


def _evil(h, rec):
    send_json(h, 200, chat_reply("Hello\x1b[2J\x1b]0;owned\x07 there\x1b[?1049h"))


def _redirect(h, rec):
    send_json(h, 307, {}, {"Location": "http://192.0.2.1:9/v1/chat/completions"})


REMOTE_CASES = {
    "garbage body": (_garbage, 2, "answered with something that is not JSON"),
    "401": (_refuse, 2, "refused the request (HTTP 401): {\"error\": {\"message\": \"invalid api key\"}}"),
    "500 every time": (_crash, 2, "is not answering (HTTP 500: Internal Server Error); is the server running?"),
    "redirect elsewhere": (_redirect, 2, "redirected to another server (http://192.0.2.1:9); refused"),
    "escape sequences": (_evil, 0, None),
}


@pytest.mark.parametrize("case", REMOTE_CASES)
def test_run_remote_against_misbehaving_servers(case, run, data_dir, vtest_avi):
    handle, rc, message = REMOTE_CASES[case]
    with serve_http(handle) as (base, rec):
        r = run("run", "--source", vtest_avi, "--remote", f"{base}/v1", "--fast", "--max-turns", "1", "--ask", "hi")
    assert r.rc == rc, r.err
    if message:
        assert f"{base}/v1/chat/completions" in r.err and message in r.err
    else:
        assert "\x1b" not in r.out + r.err and "[00:02] Hello there" in r.out
    assert len(rec.requests) >= 1


def test_run_remote_with_nothing_listening(run, data_dir, vtest_avi):
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = run("run", "--source", vtest_avi, "--remote", url, "--fast", "--max-turns", "1")
    assert r.rc == 2 and f"{url}/chat/completions is not answering (" in r.err
