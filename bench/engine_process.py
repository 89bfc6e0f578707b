"""What running the engine in its own process costs per step, side by side with the engine in this process.

The same model, frames and settings go through :class:`~app.engine.llama_backend.LlamaBackend` in this
process and through :class:`~app.engine.engine_process.EngineProcess` (a child; frames in shared memory,
requests and replies as JSON on a pipe), turn by turn, alternating so both see the same machine load.
The boundary's cost per step is what the caller waits for beyond what the engine itself measured
(``wall − total_ms``): copying the frames, two messages, waking the other process.

    .venv/bin/python bench/engine_process.py [--model demo|NAME|PATH] [--turns 40] [--tokens 128]

Writes bench/results/engine_process[_NAME].json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core import protocol  # noqa: E402
from app.engine.engine_process import EngineProcess  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from app.modelhub.library import resolve_model  # noqa: E402
from bench._common import load_frames, machine_info, med, print_table, write_results  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="demo (bundled), a library name or a text GGUF path")
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=128, help="visual tokens per frame")
    ap.add_argument("--n-ctx", type=int, default=8192)
    a = ap.parse_args()
    model, mmproj = resolve_model(a.model)
    frames = load_frames(a.turns * 2, a.tokens)
    settings = LlamaSettings(n_ctx=a.n_ctx, n_gpu_layers=0)
    local = LlamaBackend(model, mmproj, settings)
    child = EngineProcess(model, mmproj, local.settings)  # the same resolved threads
    rows: dict[str, dict[str, list[float]]] = {"in-process": {"wall": [], "engine": []},
                                                "own process": {"wall": [], "engine": []}}
    try:
        for be in (local, child):
            be.reset(protocol.SYSTEM_PROMPT)
        for i in range(a.turns):
            pair = frames[2 * i:2 * i + 2]
            order = [("in-process", local), ("own process", child)]
            for name, be in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                r = be.step(pair, "", talkativeness=-50.0)  # silent: the step is encode + prefill
                rows[name]["wall"].append((time.perf_counter() - t0) * 1000)
                rows[name]["engine"].append(r.timings.total_ms)
    finally:
        local.close()
        child.close()
    warm = slice(2, None)  # the first steps warm caches in both
    out = {}
    for name, r in rows.items():
        wall, eng = r["wall"][warm], r["engine"][warm]
        over = [w - e for w, e in zip(wall, eng)]
        out[name] = {"wall_ms_median": med(wall), "engine_ms_median": med(eng), "boundary_ms_median": med(over),
                     "boundary_ms_p90": percentile(over, 0.9), "wall_ms": r["wall"], "engine_ms": r["engine"]}
    ratio = out["own process"]["wall_ms_median"] / out["in-process"]["wall_ms_median"]
    extra = out["own process"]["boundary_ms_median"] - out["in-process"]["boundary_ms_median"]
    print_table(f"{Path(model).name}, {a.turns} silent turns of 2 frames at {a.tokens} tokens",
                ["engine", "step median ms", "engine's own ms", "caller waits beyond it (median)", "p90"],
                [[n, o["wall_ms_median"], o["engine_ms_median"], o["boundary_ms_median"], o["boundary_ms_p90"]]
                 for n, o in out.items()])
    print(f"\nown process / in-process step time: {ratio:.3f}; boundary cost {extra:.2f} ms a step "
          f"({100 * extra / out['in-process']['wall_ms_median']:.1f} % of a step)")
    name = "engine_process" + ("" if a.model == "demo" else "_" + Path(a.model).stem)
    write_results(name, {"machine": machine_info(), "model": str(model), "turns": a.turns, "tokens": a.tokens,
                         "ratio_wall": ratio, "boundary_ms": extra, "results": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
