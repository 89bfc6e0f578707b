"""``duet serve`` on llama.cpp against ``duet serve --engine vllm`` (vLLM's CPU build), same model, many viewers.

    .venv/bin/python bench/serve_engines.py [--model demo-hd32] [--viewers 1,4,16] [--turns 8]

Both engines serve the same weights: the library model ``--model`` (a GGUF pair; default ``demo-hd32``, the demo
with head size 32 that vLLM's CPU attention takes: ``duet train demo models/recipes/demo-hd32.toml``) for
llama.cpp, and the Hugging Face checkpoint read back from that very GGUF pair (app/trainer/bundled_demo.py's
``hf_from_gguf``: the dequantized tensors, checked to convert forward to the same bytes) for vLLM, served in
float32. Each server runs alone (started, measured at every viewer count, stopped), on 127.0.0.1 only:

* ``duet serve --model M --threads 2`` (its supervisor and llama.cpp child), spoken to by :class:`RemoteBackend`;
* ``duet serve --engine vllm --model HF --vllm-arg=--dtype=float32 --vllm-arg=--enforce-eager``, spoken to by
  :class:`VllmRemoteBackend` (first-token decision, session ids, append-only dialogues).

A viewer is a thread playing held-out synthetic clips (app/eval/synthetic.py, seed 7: never trained on), one
after another (``--clips-per-viewer``, each a new dialogue, viewer i starting with clip i), turn by turn as fast as
the server answers: 2 frames a turn, the question with the first (a clip of 8–10 s holds about 4 turns). For each engine and
viewer count: per-step latency p50/p99, throughput (steps a second, all viewers together), vLLM's prefix-cache hit
rate over the run (``/metrics``), and how often each step's decision (reply or ``NO REPLY``) agrees with the local
engine's (``LlamaBackend`` in this process, on the same clip and turns). Bounded: every request has the backend's
deadline, every server start a limit. Results: bench/results/serve_engines.json.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, machine_info, print_table, write_results  # noqa: E402

KEY = "bench-serve-engines-" + "k" * 16
QUESTION_FAMILIES = ("appear", "colour")


def hf_twin(model: Path, mmproj: Path, recipe: Path, out: Path) -> Path:
    """The Hugging Face checkpoint holding exactly the GGUF pair's weights (made once under ``out``)."""
    from app.trainer.bundled_demo import hf_from_gguf
    from app.trainer.config import load_config
    from app.trainer.modeling import base_checkpoint

    if (out / "config.json").is_file():
        return out
    template = base_checkpoint(load_config(str(recipe)))
    pair = (template.parent / "tiny-f32.gguf", template.parent / "mmproj-tiny-f32.gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    return hf_from_gguf(model, mmproj, template, pair, out)


def clips(n: int, turns: int) -> list[tuple[str, list[list]]]:
    """``n`` held-out clips as (question, the frames of each turn)."""
    from app.eval.synthetic import make_video

    out = []
    for i in range(n):
        v = make_video(QUESTION_FAMILIES[i % 2], "easy", i // 2, seed=7)
        times = [2.0 * k for k in range(turns) if 2.0 * k + 1.0 < v.duration]
        out.append((v.question, [[v.frame_at(t), v.frame_at(t + 1.0)] for t in times]))
    return out


def play(backend, question: str, turns: list[list], latencies: list[float] | None = None) -> list[bool]:
    """One viewer: every turn sent as the session would; the decisions (True = silent)."""
    decisions = []
    for k, frames in enumerate(turns):
        t0 = time.perf_counter()
        step = backend.step(frames, question if k == 0 else "", max_new_tokens=24)
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)
        decisions.append(step.silent)
    return decisions


def local_decisions(model: Path, mmproj: Path, work: list) -> list[list[bool]]:
    from app.core import protocol
    from app.engine.llama_backend import LlamaBackend, LlamaSettings

    out = []
    for question, turns in work:
        b = LlamaBackend(model, mmproj, LlamaSettings(n_threads=2, n_gpu_layers=0))
        b.reset(protocol.SYSTEM_PROMPT)
        out.append(play(b, question, turns))
        b.close()
    return out


def start(args: list[str], log: Path, limit: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DUET_SERVE_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    err = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", *args], cwd=REPO, env=env, stderr=err,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    deadline, t0 = time.monotonic() + limit, time.monotonic()
    pattern = re.compile(r"vLLM answers on (http://127\.0\.0\.1:\d+)/v1" if "vllm" in args
                         else r" on (http://127\.0\.0\.1:\d+)/v1")
    from app.engine.vllm_engine import get_json

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"duet serve exited ({proc.returncode}): {log.read_text()[-3000:]}")
        m = pattern.search(log.read_text())
        if m and get_json(f"{m.group(1)}/v1/models", KEY)[0] == 200:
            print(f"  started in {time.monotonic() - t0:.0f} s", flush=True)
            return proc, m.group(1)
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"duet serve did not answer within {limit:.0f} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def measure(engine: str, base: str, viewers: int, work: list, local: list[list[bool]],
            per_viewer: int = 1) -> dict:
    from app.engine.remote_backend import RemoteBackend
    from app.engine.vllm_metrics import read_prefix_cache
    from app.engine.vllm_remote import VllmRemoteBackend

    os.environ["DUET_API_KEY"] = KEY
    make = (lambda: VllmRemoteBackend(f"{base}/v1", model="")) if engine == "vllm" else (
        lambda: RemoteBackend(f"{base}/v1", model=""))
    backends = [make() for _ in range(viewers)]
    latencies: list[list[float]] = [[] for _ in range(viewers)]
    decisions: list[list[tuple[int, list[bool]]] | None] = [None] * viewers
    errors: list[str] = []

    from app.core import protocol

    def viewer(i: int) -> None:
        """Viewer ``i`` plays ``per_viewer`` clips one after the other (a new dialogue each), from clip ``i``."""
        try:
            got: list[tuple[int, list[bool]]] = []
            for j in range(per_viewer):
                c = (i + j) % len(work)
                backends[i].reset(protocol.SYSTEM_PROMPT)
                got.append((c, play(backends[i], *work[c], latencies[i])))
            decisions[i] = got
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            errors.append(f"viewer {i}: {type(e).__name__}: {e}")

    before = read_prefix_cache(base, KEY)
    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(viewers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = read_prefix_cache(base, KEY)
    lat = sorted(x for row in latencies for x in row)
    agree = total = replies = 0
    for got in decisions:
        for c, d in got or []:
            agree += sum(x == y for x, y in zip(d, local[c], strict=True))
            total += len(d)
            replies += d.count(False)
    cache = (after - before) if after is not None and before is not None else None
    return {
        "engine": engine, "viewers": viewers, "steps": len(lat), "wall_s": round(wall, 2),
        "p50_ms": round(1e3 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
        "steps_per_s": round(len(lat) / wall, 2) if wall else None,
        "prefix_cache_hit_rate": round(cache.hit_rate, 3) if cache and cache.hit_rate is not None else None,
        "prefix_cache_tokens": {"hits": cache.hits, "queries": cache.queries} if cache else None,
        "agreement_with_local": round(agree / total, 3) if total else None,
        "replies": replies,
        "requests": sum(getattr(b, "requests", len(lat_i)) for b, lat_i in zip(backends, latencies, strict=True)),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo-hd32", help="library name of the GGUF pair (default: demo-hd32)")
    ap.add_argument("--recipe", default=str(REPO / "models" / "recipes" / "demo-hd32.toml"),
                    help="the recipe the model was trained from (its tiny template gives the HF layout)")
    ap.add_argument("--viewers", default="1,4,16")
    ap.add_argument("--turns", type=int, default=8, help="turns each viewer plays (2 frames each)")
    ap.add_argument("--clips", type=int, default=8, help="different clips (viewer i starts with clip i mod N)")
    ap.add_argument("--clips-per-viewer", type=int, default=3, help="clips each viewer plays, one after another")
    ap.add_argument("--work", default=str(REPO / ".cache" / "bench-serve-engines"))
    ap.add_argument("--vllm", help="the vllm executable or environment (default: as duet serve finds it)")
    ap.add_argument("--engines", default="llama,vllm")
    ap.add_argument("--out", default="serve_engines")
    a = ap.parse_args()

    from app.modelhub.library import resolve_model

    model, mmproj = resolve_model(a.model, None)
    work_dir = Path(a.work)
    work_dir.mkdir(parents=True, exist_ok=True)
    hf = hf_twin(model, mmproj, Path(a.recipe), work_dir / f"{a.model}-hf")
    info = machine_info()
    work = clips(a.clips, a.turns)
    print(f"local engine on {len(work)} clips × {a.turns} turns …", flush=True)
    local = local_decisions(model, mmproj, work)
    viewers = [int(v) for v in a.viewers.split(",")]
    rows, results = [], []
    for engine in a.engines.split(","):
        print(f"{engine}: starting duet serve …", flush=True)
        args = ["--model", str(model), "--port", "0", "--threads", "2", "--gpu-layers", "0"] if engine == "llama" \
            else ["--engine", "vllm", "--model", str(hf), "--port", "0", "--alias", a.model,
                  "--vllm-arg=--dtype=float32", "--vllm-arg=--enforce-eager", "--vllm-arg=--max-model-len=4096",
                  *([f"--vllm={a.vllm}"] if a.vllm else [])]
        t0 = time.monotonic()
        proc, base = start(args, work_dir / f"{engine}.log", limit=900)
        started = time.monotonic() - t0
        try:
            measure(engine, base, 1, work[:1], local[:1])  # warm-up (first-request costs), not recorded
            for n in viewers:
                r = measure(engine, base, n, work, local, a.clips_per_viewer)
                r["start_s"] = round(started, 1)
                results.append(r)
                rows.append([engine, n, r["steps"], r["p50_ms"], r["p99_ms"], r["steps_per_s"],
                             r["prefix_cache_hit_rate"], r["agreement_with_local"], len(r["errors"])])
                print(f"  {n} viewers: {r}", flush=True)
        finally:
            stop(proc)
    print_table("duet serve: llama.cpp vs vLLM (CPU)",
                ["engine", "viewers", "steps", "p50 ms", "p99 ms", "steps/s", "prefix hit", "agree", "errors"], rows)
    write_results(a.out, {"machine": info, "model": a.model, "gguf": str(model.relative_to(REPO))
                          if model.is_relative_to(REPO) else str(model), "turns": a.turns, "clips": a.clips,
                          "clips_per_viewer": a.clips_per_viewer,
                          "command": " ".join(sys.argv), "results": results})


if __name__ == "__main__":
    main()
