"""GRPO rollout cost: the KV cache kept across turns vs a full re-prefill every turn, side by side.

One rollout = one clip played turn by turn by the policy with GRPO's sampling (T = 1.2, top-k 10,
24 new tokens at most per turn), as ``app.trainer.grpo`` plays them. The clip is Debian's street
video ``vtest.avi`` at the demo's geometry (1 s per frame, 2 frames per turn, 16 tokens per frame),
cut to N turns; the policy is the demo's SFT checkpoint (what GRPO starts from). The two paths
alternate rollout by rollout with the same seeds, so machine load hits both alike, and every pair
is checked to have sampled the same tokens.

    nice .venv/bin/python bench/grpo_rollout.py [--model PATH] [--turns 4,8,16,32] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, VIDEO, machine_info, print_table, write_results  # noqa: E402

DEMO_SFT = REPO / ".cache" / "train" / "demo" / "sft" / "final"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_SFT), help="an HF Qwen2.5-VL checkpoint folder (default: the demo's SFT)")
    ap.add_argument("--turns", default="4,8,16,32")
    ap.add_argument("--reps", type=int, default=5, help="rollouts per path and length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="grpo_rollout")
    args = ap.parse_args()
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no HF checkpoint at {model_dir}: run `duet train demo` (or the trainer tests) first")

    import torch

    from app.trainer.data import Dialogue, DialogueTurn, read_turn_frames
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.rollout import play

    torch.set_num_threads(args.threads)
    info = machine_info()
    turns = [int(x) for x in args.turns.split(",")]
    frames = read_turn_frames(VIDEO, 1.0, 2, 16)
    if max(turns) > len(frames):
        raise SystemExit(f"{VIDEO} gives {len(frames)} turns; ask for at most that many")
    enc = Encoder(model_dir)
    model = load_policy(model_dir)
    rows, results = [], []
    for n in turns:
        d = Dialogue(f"vtest-{n}", [DialogueTurn(f.time, f.images, "What appeared?" if i == 0 else "")
                                    for i, f in enumerate(frames[:n])])
        play(model, enc, d, sample=True, seed=0)  # warm-up (allocator, caches of the encoder)
        times: dict[bool, list[float]] = {True: [], False: []}
        same = 0
        tokens = 0
        for rep in range(args.reps):
            got = {}
            for cached in (True, False) if rep % 2 == 0 else (False, True):
                t0 = time.perf_counter()
                got[cached] = play(model, enc, d, sample=True, seed=1000 + rep, reuse_cache=cached)
                times[cached].append(time.perf_counter() - t0)
            same += got[True].reply_ids == got[False].reply_ids
            tokens += sum(len(r) for r in got[True].reply_ids)
        r = got[True]
        prompts = [len(enc.prompt(d, i, r.reply_ids[:i]).input_ids) for i in range(n)]
        prompt_tokens = prompts[-1]
        # tokens through the language model per rollout (prefill + decode; a turn's last token is never fed):
        # every turn's whole prompt again, vs each token of the transcript once
        pre_full = sum(prompts) + sum(max(0, len(x) - 1) for x in r.reply_ids)
        pre_cached = prompts[-1] + max(0, len(r.reply_ids[-1]) - 1)
        c, f = statistics.median(times[True]), statistics.median(times[False])
        rows.append([n, prompt_tokens, f"{pre_full}/{pre_cached}", round(tokens / args.reps, 1), f, c,
                     round(f / c, 2), f"{same}/{args.reps}"])
        results.append({"turns": n, "final_prompt_tokens": prompt_tokens, "sampled_tokens_per_rollout": tokens / args.reps,
                        "lm_tokens_reprefill": pre_full, "lm_tokens_cached": pre_cached,
                        "reprefill_s": times[False], "cached_s": times[True], "reprefill_median_s": f,
                        "cached_median_s": c, "speedup": f / c, "same_tokens": same})
        print(f"{n} turns: re-prefill {f:.3f} s, cached {c:.3f} s per rollout ({f / c:.2f}x)", flush=True)
    print_table(f"seconds per rollout (median of {args.reps}), {model_dir.name}, {args.threads} thread(s)",
                ["turns", "prompt tokens at last turn", "LM tokens full/cached", "sampled tokens", "re-prefill s", "cached s", "ratio",
                 "same tokens"], rows)
    info["loadavg_end"] = os.getloadavg()
    print(f"load average at start {info['loadavg']}, at end {info['loadavg_end']}")
    write_results(args.out, {"machine": info, "model": str(model_dir), "threads": args.threads, "reps": args.reps,
                             "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
