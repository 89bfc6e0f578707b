"""Thread sweep: vision encoder and LLM prefill time per step at 1, 2 and 4 threads, side by side.

One backend per thread count, on the same random model (``bench/model_3b.py`` shapes, default "mid":
the 3B's layout at about a seventh of its compute), stepped round-robin on the same real frames so
machine load hits every count alike. Embedding cache off (every frame is encoded).

    .venv/bin/python bench/thread_sweep.py [--shape mid|small|3b] [--steps 4] [--threads 1 2 4]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/thread_sweep.py …   # results file gets an _omp_passive suffix
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import usable_cores  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from bench._common import REPO, load_frames, machine_info, med, print_table, write_results  # noqa: E402
from bench.model_3b import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["3b", "mid", "small"], default="mid")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tokens-per-frame", type=int, default=128)
    a = ap.parse_args()
    info = machine_info()
    work = REPO / ".cache" / f"bench-sweep-{a.shape}"
    t0 = time.perf_counter()
    built = build(a.shape, work, quant="Q4_K_M")
    frames = load_frames(2 * (a.steps + 1), a.tokens_per_frame)
    backends = {n: LlamaBackend(built["q4"], built["mmproj"], LlamaSettings(n_ctx=4096, n_gpu_layers=0, n_threads=n,
                                                                           embed_cache_mib=0)) for n in a.threads}
    logs: dict[int, list] = {n: [] for n in a.threads}
    try:
        for step in range(a.steps + 1):  # step 0: warm-up, dropped
            for n, b in backends.items():
                r = b.step(frames[2 * step:2 * step + 2], "", talkativeness=-30.0, max_new_tokens=8)
                if step:
                    logs[n].append(r.timings)
    finally:
        for b in backends.values():
            b.close()
        shutil.rmtree(work, ignore_errors=True)
    rows, out = [], {}
    for n, ts in logs.items():
        m = {k: med([getattr(t, k) for t in ts]) for k in ("vision_ms", "image_prefill_ms", "prefill_ms", "total_ms")}
        out[str(n)] = m
        rows.append([n, m["vision_ms"], m["image_prefill_ms"] + m["prefill_ms"], m["total_ms"]])
    print_table(f"thread sweep, {a.shape} shape ({built['n_params'] / 1e9:.2f} B, Q4_K_M + F16 mmproj), 2 frames/turn "
                f"at {a.tokens_per_frame} tokens/frame, median of {a.steps} steps (ms); usable cores: {usable_cores()}",
                ["threads", "vision encoder", "LLM prefill (image + text)", "step"], rows)
    wait = os.environ.get("OMP_WAIT_POLICY", "")
    write_results(f"thread_sweep_{a.shape}" + (f"_omp_{wait.lower()}" if wait else ""),
                  {"machine": info, "shape": a.shape, "n_params": built["n_params"], "OMP_WAIT_POLICY": wait,
                   "usable_cores": usable_cores(), "steps": a.steps, "median_ms": out,
                   "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
