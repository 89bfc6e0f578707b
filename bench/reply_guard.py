"""The demo model on the real street video: replies with the reply guard vs without it, side by side.

Two sessions (guard on = the engine's default ``ReplyGuard``; guard off = no cap, no loop check) play
Debian's ``vtest.avi`` in lockstep, 1 s interval, 2 frames per turn, max_new_tokens 128 (the app's
default). Reported for each: replies, the longest reply in tokens, and replies that contain a
repeated n-gram loop (the guard's own definition, checked on the re-tokenized text at every prefix).

    .venv/bin/python bench/reply_guard.py [--model demo] [--talkativeness 2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.capture.video import VideoFileSource  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from app.engine.llama_reference import NO_GUARD  # noqa: E402
from app.engine.reply_guard import ReplyGuard  # noqa: E402
from app.engine.session import ProactiveSession, SessionConfig  # noqa: E402
from bench._common import VIDEO, model_bench_parser, print_table, start_model_bench, write_results  # noqa: E402


def has_loop(guard: ReplyGuard, tokens: list[int]) -> bool:
    return any(guard.loop_tail(tokens[:i]) for i in range(1, len(tokens) + 1))


def main() -> None:
    ap = model_bench_parser(__doc__)
    ap.add_argument("--talkativeness", type=float, default=0.0)
    ap.add_argument("--max-turns", type=int, default=0)
    a, info, model, mmproj = start_model_bench(ap)
    guard = ReplyGuard()
    cfg = SessionConfig(interval=1.0, frames_per_turn=2, tokens_per_frame=128, max_new_tokens=128,
                        talkativeness=a.talkativeness)
    t0 = time.perf_counter()
    runs = {}
    for name, g in (("guard on", guard), ("guard off", NO_GUARD)):
        b = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=8192, n_gpu_layers=0, guard=g))
        src = VideoFileSource(VIDEO, realtime=False)
        src.open()
        runs[name] = {"b": b, "src": src, "it": ProactiveSession(b, cfg).run(src), "replies": [], "turns": 0}
    done = False
    while not done:
        for r in runs.values():
            res = next(r["it"], None)
            if res is None:
                done = True
                continue
            r["turns"] += 1
            if not res.silent:
                r["replies"].append({"time": res.video_time, "text": res.text,
                                     "tokens": len(r["b"].model.tokenize(res.text, parse_special=False))})
        if a.max_turns and all(r["turns"] >= a.max_turns for r in runs.values()):
            done = True
    out = {}
    for name, r in runs.items():
        tok = r["b"].model.tokenize
        reps = r["replies"]
        out[name] = {"turns": r["turns"], "replies": reps, "n_replies": len(reps),
                     "longest_tokens": max((x["tokens"] for x in reps), default=0),
                     "looping_replies": sum(has_loop(guard, tok(x["text"], parse_special=False)) for x in reps)}
        r["src"].close()
        r["b"].close()
    print_table(f"{a.model} model on vtest.avi, talkativeness {a.talkativeness}, max_new_tokens 128, cap "
                f"{guard.max_tokens} tokens",
                ["mode", "turns", "replies", "longest reply (tokens)", "replies with a loop"],
                [[k, v["turns"], v["n_replies"], v["longest_tokens"], v["looping_replies"]] for k, v in out.items()])
    for k, v in out.items():
        print(f"\n{k}:")
        for x in v["replies"][:12]:
            print(f"  [{x['time']:5.0f} s] ({x['tokens']} tok) {x['text'].strip()[:150]}")
    write_results(f"reply_guard_{a.model if a.model in ('demo', 'tiny') else 'model'}",
                  {"machine": info, "model": [str(model), str(mmproj)], "talkativeness": a.talkativeness,
                   "cap_tokens": guard.max_tokens, "results": out, "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
