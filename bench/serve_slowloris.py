"""Slowloris against ``duet serve``: a key holder's chat latency, idle vs while sockets that never finish a
request hold the server's connections (issue 24, item 3; bar: p99 under attack within 2× of idle).

    .venv/bin/python bench/serve_slowloris.py [--sockets 200] [--rounds 4] [--chats 10] [--max-seconds 600]
    .venv/bin/python bench/serve_slowloris.py --before   # also the old uvicorn settings, in-process

The real ``duet serve --model demo`` (supervisor and server child) on 127.0.0.1, port 0, with its defaults.
The key holder sends chats as ``duet run --remote`` does (a new connection each, two inline 364×252 PNG
frames: the session's 128-token frames, ``max_tokens`` 8, greedy). The attacker is another process: it keeps
``--sockets`` connections open from the same address (127.0.0.1, as loopback clients share it), each sending
half a request and then a header byte a second, and re-opens the ones the server closed every
``--reconnect-every`` seconds (1 by default; slowloris tools wait 15; 0 re-opens at once, a connection flood).

Rounds alternate an idle window and an attack window of ``--chats`` chats each, so machine load hits both
alike. Bounded: loopback only, at most 1,000 sockets, and the run stops by itself after ``--max-seconds``
(the attacker process after the attack window, or at the same limit). Results: bench/results/serve_slowloris.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, machine_info, print_table, write_results  # noqa: E402

KEY = "bench-slowloris-" + "k" * 24
HOST = "127.0.0.1"  # loopback only
PARTIAL = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


# ---- the attacker (its own process) ----------------------------------------------------------------------
def attack(port: int, n: int, seconds: float, every: float) -> None:
    """Keep ``n`` half-sent requests open for ``seconds``, re-opening closed ones every ``every`` seconds
    (0: at once, a connection flood); print counts as JSON at the end."""
    import signal

    n = min(n, 1000)
    end = time.monotonic() + seconds

    def stop(*_: object) -> None:  # the bench ends the attack window with SIGTERM: count, then leave
        nonlocal end
        end = 0.0

    signal.signal(signal.SIGTERM, stop)
    socks: dict[socket.socket, float] = {}
    opened = answered_408 = closed_silently = refused = 0
    last_byte = last_fill = time.monotonic()
    while time.monotonic() < end:
        fill = time.monotonic() - last_fill >= every or not opened
        if fill:
            last_fill = time.monotonic()
        while fill and len(socks) < n and time.monotonic() < end:
            try:
                s = socket.create_connection((HOST, port), timeout=5)
                s.sendall(PARTIAL)
                s.setblocking(False)
                socks[s] = time.monotonic()
                opened += 1
            except OSError:
                refused += 1
                break
        ready = select.select(list(socks), [], [], 0.05)[0] if socks else []
        for s in ready:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 408"):
                answered_408 += 1
            elif not data:
                closed_silently += 1
            else:
                continue
            socks.pop(s)
            s.close()
        if time.monotonic() - last_byte >= 1.0:  # the classic trickle: one more header byte a second
            last_byte = time.monotonic()
            for s in list(socks):
                with contextlib.suppress(OSError):
                    s.send(b"X")
    for s in socks:
        s.close()
    print(json.dumps({"opened": opened, "answered_408": answered_408, "closed_silently": closed_silently,
                      "connect_failed": refused, "open_at_end": len(socks)}), flush=True)


# ---- the key holder ---------------------------------------------------------------------------------------
def frames() -> list[str]:
    from PIL import Image

    from bench._common import load_frames

    out = []
    for f in load_frames(2, 128):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def chat_once(port: int, images: list[str], model: str) -> tuple[int, float]:
    body = json.dumps({"model": model, "temperature": 0.0, "max_tokens": 8, "messages": [
        {"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in images),
                                     {"type": "text", "text": "What is happening?"}]}]}).encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, (time.perf_counter() - t0) * 1000


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


def run_rounds(port: int, a: argparse.Namespace, images: list[str], model: str, deadline: float) -> dict:
    lat: dict[str, list[float]] = {"idle": [], "attack": []}
    statuses: dict[str, list[int]] = {"idle": [], "attack": []}
    attackers = []
    for r in range(a.rounds):
        for phase in ("idle", "attack"):
            if time.monotonic() > deadline:
                break
            proc = None
            if phase == "attack":
                budget = max(5.0, deadline - time.monotonic())
                proc = subprocess.Popen([sys.executable, __file__, "--attacker", str(port), str(a.sockets),
                                         str(min(budget, 600)), str(a.reconnect_every)], stdout=subprocess.PIPE,
                                        text=True)
                time.sleep(a.settle)  # the sockets are open before the first chat
            for _ in range(a.chats):
                status, ms = chat_once(port, images, model)
                statuses[phase].append(status)
                if status == 200:
                    lat[phase].append(ms)
            if proc is not None:
                proc.terminate()
                out, _ = proc.communicate(timeout=30)
                attackers.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {"killed": True})
                time.sleep(a.settle)  # let the server close what is left before the next idle window
        print(f"round {r + 1}/{a.rounds}: idle {len(lat['idle'])} ok, attack {len(lat['attack'])} ok", flush=True)
    summary = {}
    for phase in ("idle", "attack"):
        xs = lat[phase]
        summary[phase] = {"n": len(statuses[phase]), "ok": len(xs), "non_200": [s for s in statuses[phase] if s != 200],
                          "p50_ms": percentile(xs, 0.5), "p99_ms": percentile(xs, 0.99), "max_ms": max(xs, default=0),
                          "latencies_ms": xs}
    return {"phases": summary, "attackers": attackers,
            "p99_ratio_attack_over_idle": summary["attack"]["p99_ms"] / summary["idle"]["p99_ms"]}


def start_duet_serve(data: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "DUET_DATA_DIR": str(data), "DUET_SERVE_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", "demo", "--port", "0", "--n-ctx", "2048"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            port = int(m.group(1))
            break
    else:
        raise SystemExit(f"duet serve exited (rc {proc.wait()}) before it listened")
    deadline = time.monotonic() + 180
    while True:  # the model loads in the child: wait for /v1/models
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            resp = conn.getresponse()
            model = json.loads(resp.read())["data"][0]["id"]
            conn.close()
            return proc, port, model
        except (OSError, KeyError, ValueError):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("duet serve did not answer /v1/models") from None
            time.sleep(0.3)


def before(a: argparse.Namespace, images: list[str], deadline: float) -> dict:
    """The old settings (uvicorn's limit_concurrency=64, no header deadline), in this process: how many chats fail."""
    import uvicorn

    from app.core.assets import bundled_demo
    from app.engine.serve import ServePolicy, create_server_app

    demo = bundled_demo()
    model, mmproj = demo.model, demo.mmproj
    policy = ServePolicy(api_key=KEY, alias="demo")
    app = create_server_app(model, mmproj, n_ctx=2048, n_gpu_layers=0, alias="demo", policy=policy)
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="critical", limit_concurrency=64,
                                           timeout_keep_alive=5))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        one = argparse.Namespace(**{**vars(a), "rounds": 1})
        return run_rounds(port, one, images, "demo", deadline)
    finally:
        server.should_exit = True
        sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, default=200, help="half-sent requests kept open (at most 1,000)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chats", type=int, default=10, help="the key holder's chats per window")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between starting the attack and the first chat")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="the whole run stops by itself after this")
    ap.add_argument("--before", action="store_true", help="also one round against the old uvicorn settings")
    ap.add_argument("--out", default="serve_slowloris")
    ap.add_argument("--reconnect-every", type=float, default=1.0,
                    help="seconds between the attacker's refills of closed sockets (slowloris tools: 15; 0: at once)")
    ap.add_argument("--attacker", nargs=4, metavar=("PORT", "N", "SECONDS", "EVERY"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.attacker:
        attack(int(a.attacker[0]), int(a.attacker[1]), float(a.attacker[2]), float(a.attacker[3]))
        return
    a.sockets = min(a.sockets, 1000)
    deadline = time.monotonic() + a.max_seconds
    info = machine_info()
    images = frames()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, model = start_duet_serve(Path(tmp) / "data")
        try:
            result = run_rounds(port, a, images, model, deadline)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    data = {"machine": info, "settings": {k: v for k, v in vars(a).items() if k != "attacker"},
            "server": "duet serve --model demo --port 0 --n-ctx 2048 (defaults: header_timeout 5 s, "
                      "16 waiting connections per address, 512 in all)", **result}
    rows = [[p, s["n"], s["ok"], s["p50_ms"], s["p99_ms"], s["max_ms"]] for p, s in result["phases"].items()]
    write_results(a.out, data)  # kept even if the comparison below fails
    if a.before:
        data["before"] = before(a, images, deadline + 300)
        rows += [[f"before: {p}", s["n"], s["ok"], s["p50_ms"], s["p99_ms"], s["max_ms"]]
                 for p, s in data["before"]["phases"].items()]
    print_table(f"key holder's chat latency, {a.sockets} slowloris sockets (ms)",
                ["window", "chats", "200", "p50", "p99", "max"], rows)
    print(f"p99 under attack / idle: {result['p99_ratio_attack_over_idle']:.2f}×")
    write_results(a.out, data)


if __name__ == "__main__":
    main()
