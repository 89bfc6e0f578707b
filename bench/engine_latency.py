"""Engine latency on the tiny model: stream length, instant silence, incremental vs full re-evaluation, memory.

Every comparison runs side by side in one process (steps of the two variants interleaved) so that a
concurrent load on the machine hits both alike; read the ratios, not the absolute milliseconds.

    .venv/bin/python bench/engine_latency.py [--quick]

(a) per-step latency at turn 10 vs turn 1,000 of one bounded stream (eviction active by then);
(b) a silent step with instant silence vs one that decodes ``NO REPLY`` token by token;
(c) this engine vs re-evaluating the whole history each turn at 1, 5 and 20 min of a 1 s / 2-frame stream;
(d) RSS over a long bounded stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core import protocol  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from app.engine.llama_reference import ReferenceLlamaBackend  # noqa: E402
from app.modelhub.tiny import TinySpec, build_tiny  # noqa: E402
from bench._common import (  # noqa: E402
    load_frames,
    machine_info,
    med,
    print_table,
    rss_mib,
    timings_dict,
    tokens_of,
    write_results,
)

QUIET = -30.0  # talkativeness: strongly silent
FPT = 2  # frames per turn
# Seed 1: the tiny model's first token under a strong silence bias is "NO" (seed 0 picks <|im_end|>, which
# never exercises the instant-silence path). Same shape as the default tiny model.
SPEC = TinySpec(seed=1)


class Stream:
    """One backend fed turn after turn with frames from a pool (2 per turn)."""

    def __init__(self, model, frames, settings: LlamaSettings, max_new_tokens: int = 8, **reference) -> None:
        # The frame pool repeats every 20 turns: the embedding cache (bench/vision_cache.py) stays off here
        # so that every turn pays its vision encoder and turn 10 compares with turn 1,000.
        settings = dataclasses.replace(settings, embed_cache_mib=0)
        self.b = (ReferenceLlamaBackend(model.model, model.mmproj, settings, **reference) if reference
                  else LlamaBackend(model.model, model.mmproj, settings))
        self.frames = frames
        self.turn = 0
        self.max_new_tokens = max_new_tokens
        self.log: list[dict] = []

    def step(self):
        i = (self.turn * FPT) % (len(self.frames) - FPT + 1)
        t0 = time.perf_counter()
        r = self.b.step(self.frames[i:i + FPT], "", talkativeness=QUIET, max_new_tokens=self.max_new_tokens)
        wall = (time.perf_counter() - t0) * 1e3
        self.log.append({"turn": self.turn, "wall_ms": wall, **timings_dict(r.timings), "cells": r.kv_cells,
                         "silent": r.silent, "text": r.text, "evicted": r.turns_frames_dropped})
        self.turn += 1
        return r

    def run_to(self, turn: int, on_turn=None) -> None:
        while self.turn < turn:
            self.step()
            if on_turn:
                on_turn(self)

    def close(self) -> None:
        self.b.close()


def window(log: list[dict], center: int, half: int, key: str = "wall_ms") -> list[float]:
    return [e[key] for e in log if center - half <= e["turn"] <= center + half]


def bench_stream_length(model, frames, n_ctx: int, early: int, late: int, rss_at: list[int], half: int) -> dict:
    """(a) + (d). A long stream L is built to ``late - half``; then a fresh stream S (turn 0…) and L step
    alternately for 2·half+1+early-half turns so turn ``early`` of S and turn ``late`` of L share the machine.
    L then continues to the last RSS checkpoint."""
    settings = LlamaSettings(n_ctx=n_ctx, n_gpu_layers=0)
    rss: dict[int, dict] = {}

    def sample_rss(s: Stream) -> None:
        if s.turn in rss_at:
            cur, peak = rss_mib()
            rss[s.turn] = {"rss_mib": cur, "peak_rss_mib": peak, "cells": s.log[-1]["cells"],
                           "turn_records": len(s.b.turns), "live_turns": sum(not t.removed for t in s.b.turns),
                           "n_past": s.b.n_past}

    t0 = time.perf_counter()
    long_ = Stream(model, frames, settings)
    long_.run_to(late - early, sample_rss)  # so both reach their centre on the same iteration
    build_s = time.perf_counter() - t0
    short = Stream(model, frames, settings)
    for _ in range(early + half + 1):
        short.step()
        long_.step()
        sample_rss(long_)
    short.close()
    a_early, a_late = window(short.log, early, half), window(long_.log, late, half)
    long_.run_to(max(rss_at), sample_rss)
    cur, peak = rss_mib()
    tail = window(long_.log, max(rss_at) - half - 1, half)
    split = {k: {"early": med(window(short.log, early, half, k)), "late": med(window(long_.log, late, half, k))}
             for k in ("vision_ms", "image_prefill_ms", "prefill_ms", "decode_ms", "total_ms")}
    cells_early = med(window(short.log, early, half, "cells"))
    cells_late = med(window(long_.log, late, half, "cells"))
    long_.close()
    return {
        "n_ctx": n_ctx, "window": f"median of turns centre±{half}", "early_turn": early, "late_turn": late,
        "early_median_ms": med(a_early), "late_median_ms": med(a_late), "ratio_late_over_early": med(a_late) / med(a_early),
        "early_cells": cells_early, "late_cells": cells_late,
        "turns_frames_dropped_at_late": next(e["evicted"] for e in long_.log if e["turn"] == late),
        "split_median_ms": split, "build_seconds": build_s,
        "end_turn": max(rss_at), "end_window_median_ms_not_side_by_side": med(tail),
        "rss": {str(k): v for k, v in sorted(rss.items())}, "final_rss_mib": cur, "final_peak_rss_mib": peak,
    }


def bench_instant_silence(model, frames, turns: int) -> dict:
    """(b) Two streams in lockstep on the same frames: instant silence vs token-by-token decoding."""
    inst = Stream(model, frames, LlamaSettings(n_ctx=4096, n_gpu_layers=0))
    n_no_reply = len(inst.b.model.tokenize(protocol.NO_REPLY))
    # The reference evaluates every sampled token. A random model does not follow "NO" with " REPLY", so its
    # decode is capped at len(tokens("NO REPLY")) tokens: exactly the work of decoding NO REPLY<|im_end|>
    # (the end-of-turn token is sampled from the last evaluated token's logits and never evaluated itself).
    ref = Stream(model, frames, LlamaSettings(n_ctx=4096, n_gpu_layers=0), max_new_tokens=n_no_reply,
                 instant_silence=False)
    for _ in range(turns):
        inst.step()
        ref.step()
    inst.close()
    ref.close()
    skip = 2  # warm-up
    res = {}
    for name, s in (("instant", inst), ("token_by_token", ref)):
        logs = s.log[skip:]
        res[name] = {k: med([e[k] for e in logs]) for k in ("wall_ms", "vision_ms", "prefill_ms", "decode_ms")}
        res[name]["texts"] = sorted({e["text"] for e in logs})
        res[name]["first_token_no"] = all(e["text"].startswith("NO") for e in logs)
    res["tokens_decoded_by_reference"] = n_no_reply
    res["decode_saved_ms"] = res["token_by_token"]["decode_ms"] - res["instant"]["decode_ms"]
    res["step_ratio_reference_over_instant"] = res["token_by_token"]["wall_ms"] / res["instant"]["wall_ms"]
    res["turns_measured"] = turns - skip
    return res


def reeval_backend_at(model, frames, turns_before: int, n_ctx_margin: int = 512):
    """A full-re-evaluation backend whose history holds ``turns_before`` silent turns, built without running them.

    ``ReferenceLlamaBackend.load_history`` is given exactly the history ``turns_before`` silent
    instant-silence steps leave.
    """
    from app.engine.llama_native import Chunks

    def imgs_of(t: int):
        i = (t * FPT) % (len(frames) - FPT + 1)
        return frames[i:i + FPT]

    probe = LlamaBackend(model.model, model.mmproj, LlamaSettings(n_ctx=512, n_gpu_layers=0))
    marker = probe.proj.marker
    user = protocol.user_turn(FPT, "", marker) + protocol.assistant_prefix(False)
    tail = protocol.assistant_tail(protocol.NO_REPLY)
    transcript = protocol.system_turn(protocol.SYSTEM_PROMPT) + (user + tail) * turns_before
    images = [im for t in range(turns_before) for im in imgs_of(t)]
    with Chunks(probe.proj, transcript + user, images + list(imgs_of(turns_before))) as ch:
        need, positions = ch.n_tokens, sum(c.n_pos for c in ch.info)
    probe.close()
    n_ctx = (need + n_ctx_margin + 255) // 256 * 256
    b = ReferenceLlamaBackend(model.model, model.mmproj, LlamaSettings(n_ctx=n_ctx, n_gpu_layers=0), full_reeval=True)
    b.load_history(transcript, images)
    return b, need, positions, imgs_of(turns_before)


def bench_full_reeval(model, frames, points: list[int], engine_ctx: int) -> list[dict]:
    """(c) At each point: the engine's step (median of 3) vs one full-re-evaluation step, interleaved."""
    out = []
    eng = Stream(model, frames, LlamaSettings(n_ctx=engine_ctx, n_gpu_layers=0))
    for n in points:
        eng.run_to(n - 1)
        ref, need, positions, imgs = reeval_backend_at(model, frames, n - 1)
        e_first = eng.step()  # turn n-1 (0-based): the n-th turn, on the same frames as the reference's
        e1 = e_first.timings.total_ms
        t0 = time.perf_counter()
        r = ref.step(imgs, "", talkativeness=QUIET, max_new_tokens=8)
        ref_wall = (time.perf_counter() - t0) * 1e3
        ref.close()
        e2, e3 = eng.step().timings.total_ms, eng.step().timings.total_ms
        eng_ms = med([e1, e2, e3])
        out.append({"turn": n, "video_minutes": n * FPT / 60.0, "engine_ms": eng_ms,
                    "engine_cells": eng.log[-1]["cells"], "engine_n_ctx": engine_ctx,
                    "full_reeval_ms": ref_wall, "full_reeval_split_ms": timings_dict(r.timings),
                    "full_reeval_cells": need, "full_reeval_positions": positions, "full_reeval_n_ctx": ref.n_ctx,
                    "images_reencoded": FPT * n, "ratio_full_over_engine": ref_wall / eng_ms,
                    "engine_decision": {"silent": e_first.silent, "text": e_first.text},
                    "full_reeval_decision": {"silent": r.silent, "text": r.text},
                    "same_decision": e_first.silent == r.silent and e_first.text == r.text})
        print(f"  full re-eval at turn {n}: {ref_wall / 1e3:.1f} s vs engine {eng_ms:.1f} ms", flush=True)
    eng.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: short streams, under a minute")
    ap.add_argument("--tokens-per-frame", type=int, default=128)
    args = ap.parse_args()
    info = machine_info()
    model = build_tiny(SPEC)
    frames = load_frames(40, args.tokens_per_frame)
    tpf = tokens_of(frames[0])
    q = args.quick
    cfg = {
        "quick": q, "model": f"tiny Qwen2.5-VL, {SPEC}", "frames_per_turn": FPT,
        "frame_px": list(frames[0].shape[:2]), "tokens_per_frame": tpf, "talkativeness": QUIET,
        "settings": "LlamaSettings defaults (CPU, n_threads=0 → the usable cores, flash_attn auto), embedding cache off, unless noted",
    }
    print(f"tiny model, {FPT} frames/turn of {frames[0].shape[1]}×{frames[0].shape[0]} px = {tpf} tokens/frame; "
          f"{info['cpu_model']}, {info['cores']} cores, llama-cpp-python {info['llama_cpp_python']}", flush=True)

    t0 = time.perf_counter()
    a = bench_stream_length(model, frames, n_ctx=2048 if q else 4096, early=10, late=100 if q else 1000,
                            rss_at=[10, 50, 120] if q else [10, 100, 1000, 3000], half=5)
    print(f"(a)/(d) done in {time.perf_counter() - t0:.0f} s", flush=True)
    b = bench_instant_silence(model, frames, turns=8 if q else 24)
    print("(b) done", flush=True)
    c = bench_full_reeval(model, frames, [30] if q else [30, 150, 600], engine_ctx=8192)

    print_table(f"(a) per-step latency vs stream length (n_ctx {a['n_ctx']}, {a['window']})",
                ["turn", "median ms", "vision", "prefill (image + text)", "decode", "KV cells"],
                [[a["early_turn"], a["early_median_ms"], a["split_median_ms"]["vision_ms"]["early"],
                  a["split_median_ms"]["image_prefill_ms"]["early"] + a["split_median_ms"]["prefill_ms"]["early"],
                  a["split_median_ms"]["decode_ms"]["early"],
                  a["early_cells"]],
                 [a["late_turn"], a["late_median_ms"], a["split_median_ms"]["vision_ms"]["late"],
                  a["split_median_ms"]["image_prefill_ms"]["late"] + a["split_median_ms"]["prefill_ms"]["late"],
                  a["split_median_ms"]["decode_ms"]["late"],
                  a["late_cells"]]])
    print(f"ratio turn {a['late_turn']} / turn {a['early_turn']}: {a['ratio_late_over_early']:.3f} (target ≤ 1.2)")
    print_table("(b) silent step: instant silence vs NO REPLY decoded token by token (median ms)",
                ["mode", "step", "decode", "texts"],
                [[k, b[k]["wall_ms"], b[k]["decode_ms"], " | ".join(b[k]["texts"])]
                 for k in ("instant", "token_by_token")])
    print(f"step ratio token-by-token / instant: {b['step_ratio_reference_over_instant']:.3f}")
    print_table("(c) this engine vs full re-evaluation of the history (one step)",
                ["turn", "video min", "engine ms", "full re-eval ms", "ratio", "re-eval cells", "frames re-encoded",
                 "same decision"],
                [[r["turn"], r["video_minutes"], r["engine_ms"], r["full_reeval_ms"], r["ratio_full_over_engine"],
                  r["full_reeval_cells"], r["images_reencoded"], r["same_decision"]] for r in c])
    print_table("(d) memory over a long bounded stream", ["turn", "RSS MiB", "peak RSS MiB", "KV cells", "turn records"],
                [[k, v["rss_mib"], v["peak_rss_mib"], v["cells"], v["turn_records"]] for k, v in a["rss"].items()])
    write_results("engine_latency" + ("_quick" if q else ""),
                  {"machine": info, "config": cfg, "stream_length": a, "instant_silence": b, "full_reeval": c,
                   "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
