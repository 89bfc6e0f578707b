"""Soak: a long accelerated stream (flat memory, steady step time) and a bounded ``duet serve`` load test.

    .venv/bin/python bench/soak.py stream [--hours 2] [--model demo|tiny]
    .venv/bin/python bench/soak.py serve [--clients 4] [--seconds 60]

``stream``: the real ProactiveSession and LlamaBackend fed synthetic frames (a moving, recolouring
square on a textured background, so no two frames are alike) at full speed, 1 s interval, 2 frames a
turn, ``--hours`` of video time. RSS and step time are sampled every 10 minutes of video; the
verdict compares RSS after the first sampled window with RSS at the end (context eviction must
keep memory flat).

``serve``: ``duet serve``'s guarded app (real uvicorn on 127.0.0.1, the tiny model) and N client
threads, each sending chat requests with two inline PNG frames for M seconds, plus one thread
polling /v1/models throughout; latency percentiles, and the count of errors (must be 0).
Results: bench/results/soak-stream.json, bench/results/soak-serve.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from app.capture.base import FrameSource  # noqa: E402
from app.core.types import Frame  # noqa: E402
from bench._common import machine_info, print_table, rss_mib, write_results  # noqa: E402


class SyntheticSource(FrameSource):
    """Frames generated on the fly at full speed, for ``seconds`` of video time; never live."""

    live = False
    name = "synthetic"

    def __init__(self, seconds: float, size: tuple[int, int] = (224, 168)) -> None:
        self.seconds = seconds
        self.w, self.h = size
        rng = np.random.default_rng(0)
        self.background = rng.integers(0, 80, (self.h, self.w, 3), dtype=np.uint8)

    def open(self) -> None:
        pass

    def frame(self, t: float) -> np.ndarray:
        img = self.background.copy()
        x = int((t * 7) % (self.w - 40))
        y = int((t * 3) % (self.h - 40))
        colour = ((int(t) * 37) % 256, (int(t) * 91) % 256, (int(t) * 53) % 256)
        img[y:y + 40, x:x + 40] = colour
        cv2.putText(img, f"{int(t) % 1000}", (5, self.h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        return img

    def sample(self, interval: float) -> Iterator[Frame]:
        k = 1
        while k * interval <= self.seconds + 1e-9:
            yield Frame(image=self.frame(k * interval), time=k * interval, index=k, source=self.name)
            k += 1

    def close(self) -> None:
        pass


def _model(spec: str) -> tuple[Path, Path]:
    from app.modelhub.library import resolve_model

    return resolve_model(spec)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


REF_TURNS = 10


def soak_stream(a: argparse.Namespace) -> dict:
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.engine.session import ProactiveSession, SessionConfig

    model, mmproj = _model(a.model)
    layers = -1 if a.gpu else 0
    backend = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=a.n_ctx, n_gpu_layers=layers))
    session = ProactiveSession(backend, SessionConfig(interval=1.0, frames_per_turn=2, max_new_tokens=24))
    session.ask("Tell me when something changes.")
    # A fresh stream steps in lockstep with the long one for the last REF_TURNS turns of each window:
    # the machine's load hits both alike, so long/fresh isolates what stream length costs.
    ref = ProactiveSession(LlamaBackend(model, mmproj, LlamaSettings(n_ctx=a.n_ctx, n_gpu_layers=layers)),
                           SessionConfig(interval=1.0, frames_per_turn=2, max_new_tokens=24))
    def cache_mib() -> float:  # both backends' embedding caches (each bounded, 64 MiB by default)
        return (backend.embed_cache.stats.bytes + ref.backend.embed_cache.stats.bytes) / 2**20

    seconds = a.hours * 3600
    window_s = a.window_min * 60
    samples: list[dict] = []
    steps: list[float] = []
    paired: list[tuple[float, float]] = []
    replies = evicted = 0
    t0 = time.perf_counter()
    next_sample = window_s
    ref_t = 0.0
    with SyntheticSource(seconds) as src:
        for r in session.run(src):
            steps.append(r.timings.total_ms)
            replies += not r.silent
            evicted = r.turns_frames_dropped
            if r.video_time > next_sample - REF_TURNS * 2:
                if not paired:
                    ref.reset()
                    ref.ask("Tell me when something changes.")
                    ref_t = 0.0
                rr = None
                while rr is None:  # a turn's worth of frames (the same pictures the long stream saw)
                    ref_t += 1.0
                    rr = ref.feed(Frame(image=src.frame(r.video_time - 2 + ref_t % 2), time=ref_t, index=int(ref_t),
                                        source="ref"))
                paired.append((r.timings.total_ms, rr.timings.total_ms))
            if r.video_time >= next_sample:
                cur, peak = rss_mib()
                long_ms = statistics.median(p[0] for p in paired)
                fresh_ms = statistics.median(p[1] for p in paired)
                samples.append({"video_min": round(r.video_time / 60, 1), "wall_s": round(time.perf_counter() - t0, 1),
                                "rss_mib": round(cur, 1), "peak_mib": round(peak, 1), "turns": r.turn + 1,
                                # bounded by LlamaSettings.embed_cache_mib: RSS grows by this much, then stops
                                "embed_cache_mib": round(cache_mib(), 1),
                                "rss_less_cache_mib": round(cur - cache_mib(), 1),
                                "kv_cells": r.kv_cells, "turns_frames_dropped": r.turns_frames_dropped,
                                "step_p50_ms": round(statistics.median(steps), 1),
                                "step_p95_ms": round(pct(steps, 95), 1), "replies": replies,
                                "paired_long_ms": round(long_ms, 1), "paired_fresh_ms": round(fresh_ms, 1),
                                "long_over_fresh": round(long_ms / fresh_ms, 2)})
                print(f"  {samples[-1]}", flush=True)
                steps, paired = [], []
                next_sample += window_s
    backend.close()
    ref.backend.close()
    rows = [[s["video_min"], s["wall_s"], s["rss_mib"], s["embed_cache_mib"], s["step_p50_ms"], s["step_p95_ms"],
             s["long_over_fresh"], s["kv_cells"], s["turns_frames_dropped"]] for s in samples]
    print_table(f"soak stream: {a.hours:g} h of video, {model.name}", ["video min", "wall s", "RSS MiB",
                "embedding caches MiB", "step p50 ms", "step p95 ms", "long/fresh (paired)", "KV cells", "turns frames dropped"], rows)
    first, last = samples[0]["rss_mib"], samples[-1]["rss_mib"]
    growth_less_cache = round(samples[-1]["rss_less_cache_mib"] - samples[0]["rss_less_cache_mib"], 1)
    verdict = {"rss_first_window_mib": first, "rss_end_mib": last, "rss_growth_mib": round(last - first, 1),
               "rss_growth_less_cache_mib": growth_less_cache, "embed_cache_end_mib": samples[-1]["embed_cache_mib"],
               "video_hours": a.hours, "wall_s": round(time.perf_counter() - t0, 1),
               "turns": samples[-1]["turns"], "replies": replies, "turns_frames_dropped": evicted}
    print(f"\nRSS {first} → {last} MiB ({last - first:+.1f} MiB; {growth_less_cache:+.1f} MiB beside the bounded "
          f"embedding caches) over {a.hours:g} h of video in {verdict['wall_s']:.0f} s wall")
    return {"model": str(model), "n_ctx": a.n_ctx, "device": backend.device, "samples": samples, "verdict": verdict}


def soak_serve(a: argparse.Namespace) -> dict:
    import io

    from PIL import Image

    from app.engine.serve import ServePolicy, create_server_app
    from tests.engine.loopback import serve_asgi

    model, mmproj = _model(a.model)
    key = "soak-" + "k" * 32
    app = create_server_app(model, mmproj, n_ctx=a.n_ctx, n_gpu_layers=0, policy=ServePolicy(api_key=key))
    src = SyntheticSource(10_000)

    def png(t: float) -> str:
        buf = io.BytesIO()
        Image.fromarray(src.frame(t)).save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    frames = [png(float(t)) for t in range(1, 41)]
    lock = threading.Lock()
    chat_ms: list[float] = []
    models_ms: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def request(base: str, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body).encode() if body else None, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    def client(base: str, i: int) -> None:
        k = i
        while not stop.is_set():
            body = {"model": "mmduet2", "temperature": 0.0, "max_tokens": 8, "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": frames[k % 40]}},
                                             {"type": "image_url", "image_url": {"url": frames[(k + 1) % 40]}},
                                             {"type": "text", "text": "What changed?"}]}]}
            t = time.perf_counter()
            try:
                status, data = request(base, "POST", "/v1/chat/completions", body)
                ok = status == 200 and isinstance(json.loads(data)["choices"][0]["message"]["content"], str)
            except Exception as e:  # noqa: BLE001 - every failure counts as an error
                status, ok, data = -1, False, repr(e).encode()
            with lock:
                (chat_ms.append((time.perf_counter() - t) * 1e3) if ok else
                 errors.append(f"chat {status}: {data[:200]!r}"))
            k += 2

    def poller(base: str) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                status, _ = request(base, "GET", "/v1/models", None)
            except Exception as e:  # noqa: BLE001
                status = repr(e)
            with lock:
                (models_ms.append((time.perf_counter() - t) * 1e3) if status == 200 else
                 errors.append(f"models {status}"))
            stop.wait(0.2)

    rss0 = rss_mib()[0]
    with serve_asgi(app) as base:
        threads = [threading.Thread(target=client, args=(base, i)) for i in range(a.clients)]
        threads.append(threading.Thread(target=poller, args=(base,)))
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(a.seconds)
        stop.set()
        for t in threads:
            t.join(600)
        wall = time.perf_counter() - t0
    rss1 = rss_mib()[0]
    res = {"clients": a.clients, "seconds": a.seconds, "wall_s": round(wall, 1), "chats": len(chat_ms),
           "chats_per_s": round(len(chat_ms) / wall, 2), "errors": len(errors), "error_samples": errors[:5],
           "chat_ms": {f"p{q}": round(pct(chat_ms, q), 1) for q in (50, 90, 99)} | {"max": round(max(chat_ms), 1)},
           "models_ms": {f"p{q}": round(pct(models_ms, q), 1) for q in (50, 90, 99)} | {"max": round(max(models_ms), 1)},
           "models_polls": len(models_ms), "rss_before_mib": round(rss0, 1), "rss_after_mib": round(rss1, 1)}
    print_table(f"duet serve load: {a.clients} clients × {a.seconds} s, {model.name}",
                ["route", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                [["/v1/chat/completions", len(chat_ms), *res["chat_ms"].values()],
                 ["/v1/models (during chats)", len(models_ms), *res["models_ms"].values()]])
    print(f"errors: {len(errors)}  {errors[:3]}")
    return {"model": str(model), **res}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["stream", "serve"])
    ap.add_argument("--model", default="demo", help="library name, 'demo' or 'tiny'")
    ap.add_argument("--hours", type=float, default=2.0, help="stream: hours of video time")
    ap.add_argument("--window-min", type=float, default=10.0, help="stream: minutes of video between samples")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--gpu", action="store_true", help="stream: offload the model to the GPU (a GPU build, bench/gpu.sh)")
    ap.add_argument("--clients", type=int, default=4, help="serve: concurrent chat clients")
    ap.add_argument("--seconds", type=float, default=60.0, help="serve: how long they send")
    a = ap.parse_args()
    out = soak_stream(a) if a.what == "stream" else soak_serve(a)
    path = write_results(f"soak-{a.what}" + ("-gpu" if a.gpu else ""), {"machine": machine_info(), "args": vars(a), **out})
    print(f"results: {path}")
    return 0 if a.what == "stream" or out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
