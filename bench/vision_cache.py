"""Vision encoder time per step on a static clip vs a moving clip, with the embedding cache (and without).

The moving clip is Debian's street video ``vtest.avi``; the static clip is its first frame written
as a 90-second MJPG video (a real file decoded by the same VideoFileSource, the way a paused screen
or an unchanging slide arrives). Four sessions step in lockstep (static/moving × cache on/off) so
machine load hits all alike. Reported per clip: vision encoder ms per step (mean and median),
frames reused, cache hit rate, and the whole step.

    .venv/bin/python bench/vision_cache.py [--model demo|tiny|PATH] [--turns 20]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from app.capture.video import VideoFileSource  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from app.engine.session import ProactiveSession, SessionConfig  # noqa: E402
from bench._common import (  # noqa: E402
    VIDEO,
    med,
    model_bench_parser,
    print_table,
    start_model_bench,
    write_results,
)


def static_clip(path: Path, seconds: int = 90, fps: int = 10) -> Path:
    cap = cv2.VideoCapture(str(VIDEO))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read {VIDEO}")
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frame.shape[1], frame.shape[0]))
    for _ in range(seconds * fps):
        out.write(frame)
    out.release()
    return path


def main() -> None:
    ap = model_bench_parser(__doc__)
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--tokens-per-frame", type=int, default=128)
    a, info, model, mmproj = start_model_bench(ap)
    cfg = SessionConfig(interval=1.0, frames_per_turn=2, tokens_per_frame=a.tokens_per_frame, max_new_tokens=32)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"static": static_clip(Path(tmp) / "static.avi"), "moving": VIDEO}
        runs = {}
        for clip, path in clips.items():
            for cache in (True, False):
                b = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=8192, n_gpu_layers=0,
                                                              embed_cache_mib=64 if cache else 0))
                src = VideoFileSource(path, realtime=False)
                src.open()
                runs[(clip, cache)] = {"backend": b, "source": src, "it": ProactiveSession(b, cfg).run(src), "steps": []}
        for _ in range(a.turns):  # lockstep
            for r in runs.values():
                res = next(r["it"], None)
                if res is not None:
                    r["steps"].append(res)
        out = {}
        for (clip, cache), r in runs.items():
            st = r["steps"]
            vis = [s.timings.vision_ms for s in st]
            stats = r["backend"].embed_cache.stats
            out[f"{clip}_{'cache' if cache else 'no_cache'}"] = {
                "steps": len(st), "vision_ms_mean": sum(vis) / len(vis), "vision_ms_median": med(vis),
                "vision_ms_mean_after_first": sum(vis[1:]) / max(1, len(vis) - 1),
                # the text model's pass over the turn (one batch: text and frames together)
                "llm_ms_median": med([s.timings.image_prefill_ms + s.timings.prefill_ms for s in st]),
                "step_ms_median": med([s.timings.total_ms for s in st]),
                "frames_reused": sum(s.frames_reused for s in st), "frames": 2 * len(st),
                "hit_rate": stats.hit_rate, "cache_bytes": stats.bytes,
                "replies": [s.text for s in st if not s.silent],
            }
            r["source"].close()
            r["backend"].close()
    ratio = out["static_cache"]["vision_ms_mean"] / out["moving_cache"]["vision_ms_mean"]
    print_table(f"vision encoder per step, {a.model} model, {a.turns} turns of 2 frames at {a.tokens_per_frame} "
                "tokens/frame (ms)",
                ["clip, cache", "vision mean", "vision median", "text model over the turn", "step",
                 "frames reused", "hit rate"],
                [[k, v["vision_ms_mean"], v["vision_ms_median"], v["llm_ms_median"], v["step_ms_median"], f"{v['frames_reused']}/{v['frames']}",
                  f"{v['hit_rate']:.0%}"] for k, v in out.items()])
    print(f"static / moving vision encoder time per step (cache on, mean over all {a.turns} steps): {ratio:.1%} "
          "(goal ≤ 5 %)")
    write_results(f"vision_cache_{a.model if a.model in ('demo', 'tiny') else 'model'}",
                  {"machine": info, "model": [str(model), str(mmproj)], "turns": a.turns,
                   "tokens_per_frame": a.tokens_per_frame, "results": out, "static_over_moving": ratio,
                   "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
