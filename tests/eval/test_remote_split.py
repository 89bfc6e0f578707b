"""``duet eval --remote URL1,URL2``: a dataset split across real ``duet serve`` processes on loopback.

Two servers run the bundled demo model (the same weights on every machine); a synthetic set made with
``duet eval make-synthetic`` is evaluated on one server and on both. Each video is a fresh dialogue and a
server answers each request from the whole dialogue it is sent, so the split must change nothing: the
same replies per video, the same PAUC. An interrupted run is resumed with only the unfinished videos,
and a server that stops answering hands its videos to the other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.eval.cli import StatusLine, main
from tests.engine.loopback import listening_port, send_json, serve_http

KEY = "split-" + "s" * 26
REPO = Path(__file__).resolve().parents[2]


def start_serve(model: Path, mmproj: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DUET_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(REPO),
           "DUET_SERVE_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(model), "--mmproj",
                             str(mmproj), "--port", "0", "--threads", "1", "--gpu-layers", "0",
                             "--n-ctx", "4096"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{listening_port(proc)}/v1"
    deadline = time.monotonic() + 120
    while True:  # the socket listens before the child has loaded the model
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/models", headers={
                "Authorization": f"Bearer {KEY}"}), timeout=2).read()
            return proc, base
        except (urllib.error.URLError, OSError):
            assert proc.poll() is None, "duet serve exited"
            assert time.monotonic() < deadline, "duet serve never answered"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def servers(bundled_demo_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    procs = []
    try:
        for _ in range(2):
            procs.append(start_serve(*bundled_demo_model, tmp))
        yield [base for _, base in procs]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    argv = ["make-synthetic", str(out), "--difficulty", "easy,hard", "--per-family", "2", "--seed", "5"]
    assert main(argv) == 0  # 5 families × 2 difficulties × 2 = 20 videos
    return out / "dataset.jsonl"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("DUET_API_KEY", KEY)


def predictions(out: Path) -> dict[str, tuple]:
    """Per video what the model did: replies (time, text), turns, error. Timings and the server left out."""
    preds = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        assert p["question_id"] not in preds, f"{p['question_id']} was predicted twice"
        preds[p["question_id"]] = (p["model_response_list"], p["n_turns"], p["error"])
    return preds


def servers_used(out: Path) -> dict[str, int]:
    used: dict[str, int] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        b = json.loads(line)["meta"]["backend"]
        used[b] = used.get(b, 0) + 1
    return used


def pauc(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["summary"]["pauc"]


@pytest.fixture(scope="module")
def single(servers, synth, tmp_path_factory) -> Path:
    """The reference: the whole set on the first server alone."""
    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUET_API_KEY", KEY)
        assert main([str(synth), "--remote", servers[0], "--out", str(out), "--no-timelines"]) == 0
    return out


def host(url: str) -> str:
    return url.removeprefix("http://").split("/")[0]


def test_two_servers_give_the_single_server_predictions_and_pauc(servers, synth, single, tmp_path, capsys):
    out = tmp_path / "two"
    assert main([str(synth), "--remote", ",".join(servers), "--out", str(out), "--no-timelines"]) == 0
    assert predictions(out) == predictions(single)
    assert pauc(out) == pauc(single)
    assert any(v > 0 for v in pauc(single).values())  # the demo model answers some events: a real comparison
    used = servers_used(out)
    assert set(used) == {host(u) for u in servers} and sum(used.values()) == 20  # both did a share
    assert json.loads((out / "run.json").read_text())["run"]["model"] == "remote: demo-q8_0"
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert len(lines) == 20 and "\r" not in err and "\x1b" not in err  # not a terminal: plain lines
    assert all(" · ETA " in ln for ln in lines[:-1]) and " · done in " in lines[-1]
    assert [ln.split("] ")[0] for ln in lines] == [f"[{k}/20" for k in range(1, 21)]


def test_an_interrupted_split_run_goes_on_with_only_the_rest(servers, synth, single, tmp_path, capsys):
    out = tmp_path / "resumed"
    env = {**os.environ, "DUET_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "eval", str(synth), "--remote", ",".join(servers),
                             "--out", str(out), "--no-timelines"], cwd=REPO, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    preds_file = out / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while not (preds_file.is_file() and len(preds_file.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the videos finished are kept in" in err and "Traceback" not in err
    first = predictions(out)
    assert 3 <= len(first) < 20, "the run must stop part-way for this test to mean anything"
    assert main([str(synth), "--remote", ",".join(servers), "--out", str(out), "--no-timelines"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]
    redone = {ln.split("] ", 1)[1].split(" ", 1)[0] for ln in lines}
    left = 20 - len(first)
    assert len(lines) == left and lines[-1].startswith(f"[{left}/{left}]")
    assert redone == set(predictions(single)) - set(first)  # only the rest was evaluated
    assert predictions(out) == predictions(single) and pauc(out) == pauc(single)


def test_a_server_that_stops_answering_hands_its_videos_to_the_other(servers, synth, single, tmp_path,
                                                                      capsys):
    """The second "server" lists the same model when asked at the start, then answers nothing (it closes
    every connection): its first video goes back to the queue and the real server does them all."""
    asked = []

    def dies(h, rec):
        if h.command == "GET" and not asked:
            asked.append(h.path)
            send_json(h, 200, {"object": "list", "data": [{"id": "demo-q8_0", "object": "model"}]})
        else:
            h.close_connection = True  # no answer at all

    out = tmp_path / "survivor"
    with serve_http(dies) as (dead, rec):
        argv = [str(synth), "--remote", f"{servers[0]},{dead}/v1", "--out", str(out), "--no-timelines"]
        assert main(argv) == 0
    assert predictions(out) == predictions(single) and pauc(out) == pauc(single)
    assert servers_used(out) == {host(servers[0]): 20}
    err = capsys.readouterr().err
    assert f"{host(dead)} stopped answering (BackendError: {dead}/v1/chat/completions is not answering" in err
    assert "the other 1 take its videos" in err
    assert [p for m, p, _ in rec.requests if m == "POST"] == ["/v1/chat/completions"] * 3  # 1 try + 2 retries


def test_bad_server_lists_are_refused_before_anything_runs(synth, tmp_path, capsys):
    def lists(name):
        return lambda h, rec: send_json(h, 200, {"object": "list", "data": [{"id": name, "object": "model"}]})

    with serve_http(lists("demo")) as (a, _), serve_http(lists("mmduet2-q4_k_m")) as (b, rec_b):
        assert main([str(synth), "--remote", f"{a}/v1,{b}/v1", "--out", str(tmp_path / "x")]) == 2
        assert (f"the servers serve different models ({a}/v1 serves 'demo', {b}/v1 serves 'mmduet2-q4_k_m')"
                in capsys.readouterr().err)
        assert main([str(synth), "--remote", f"{a}/v1,{a}/v1", "--out", str(tmp_path / "x")]) == 2
        assert "a server is listed twice" in capsys.readouterr().err
        assert main([str(synth), "--remote", f"{a}/v1", "--model", "demo", "--out", str(tmp_path / "x")]) == 2
        assert "not both" in capsys.readouterr().err
    assert all(m == "GET" for m, _, _ in rec_b.requests)  # nothing was sent to be evaluated
    assert not (tmp_path / "x" / "predictions.jsonl").exists()


def _read_all(master: int) -> str:
    """Everything the closed pty's other end wrote: one read may return only a part of it."""
    out = b""
    try:
        while chunk := os.read(master, 4096):
            out += chunk
    except OSError:  # EIO: the other end is closed and all was read (Linux)
        pass
    os.close(master)
    return out.decode()


def test_the_progress_line_is_rewritten_in_place_on_a_terminal():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        line = StatusLine(tty)
        line.status("[1/3] a: 4 turns · ETA 00:02")
        line.message("warning: something")
        line.status("[2/3] b: 4 turns · ETA 00:01")
        line.close()
    written = _read_all(master)
    assert written.replace("\r\n", "\n") == (
        "\r\x1b[K[1/3] a: 4 turns · ETA 00:02"  # the line
        "\r\x1b[Kwarning: something\n"  # cleared for a message, which stays above it
        "[1/3] a: 4 turns · ETA 00:02"  # the line again
        "\r\x1b[K[2/3] b: 4 turns · ETA 00:01\n")  # rewritten in place; a newline when done
