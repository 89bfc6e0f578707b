"""A feedback fine-tune's training step with LoRA on the Qwen2.5-VL-3B shape (random weights), on this CPU.

What ``duet train feedback`` does to a base too large to fine-tune in full (app/trainer/feedback_job.py):
bf16 weights, LoRA r = 16 / α = 32 on the language model's q, k, v, o, gate, up and down projections
(``app.trainer.modeling.LORA_TARGETS``), vision tower frozen, gradient checkpointing, AdamW (β 0.9, 0.95),
``sft.dialogue_loss`` with the marked turn weighted (``session_dialogues.marked_weights``). Nothing here is a
copy of that path: the random model is saved as a bf16 checkpoint once and read back by the trainer's own
``load_policy`` (so the peak memory is the trainer's), and the loss is the trainer's.

The dialogue is one realistic feedback window: ``--turns`` turns of 2 frames of Debian's ``vtest.avi`` at
``--tokens-per-frame`` (128) visual tokens each, a question in the first turn, one corrected reply in its
words at turn ``turns // 2`` (the marked turn), NO REPLY elsewhere. Each step is one forward and backward over
it and one optimizer step (the job does ``sft.batch`` = 4 dialogues of this size per optimizer step: 4
forward/backward passes, one update). Weight values do not change the arithmetic, so the times and the memory
are those of MMDuet2-3B's shape; what it learns is meaningless.

    nice -n 10 .venv/bin/python bench/lora_3b.py [--steps 3] [--turns 4] [--threads 2] [--shape 3b|small|quick] [--keep]

Phases run in two processes so each one's peak RSS is its own: ``build`` writes the random bf16 checkpoint
(≈ 7.5 GB on disk for the 3B, in ``.cache/bench-lora3b``, deleted at the end unless ``--keep``), ``train`` loads
it and steps. ``--shape quick|small`` is a smoke test of the same path on a small model of the same layout (small: the
real vocabulary).
Writes ``bench/results/lora_3b[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, VIDEO, machine_info, print_table, rss_mib, write_results  # noqa: E402

WORK = REPO / ".cache" / "bench-lora3b"
QUESTION = "Tell me when someone crosses the street."
CORRECTION = "A man in a dark coat walks past the lamp post."  # the user's words, at the marked turn


def build(shape: str, hf: Path) -> dict:
    """Write the random model of ``shape`` as a bf16 HF checkpoint with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from app.core import protocol
    from app.modelhub.tiny import build_tiny, write_processor_files
    from bench.model_3b import TOKENIZER_FILES, config_for

    cfg = config_for(shape)
    hf.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny()
    for f in TOKENIZER_FILES:
        if (tiny.hf_dir / f).exists():
            shutil.copy(tiny.hf_dir / f, hf / f)
    write_processor_files(hf, max_pixels=128 * 28 * 28)
    tok = AutoTokenizer.from_pretrained(hf)
    # the tiny tokenizer numbers its special tokens from its own (small) vocabulary: the config must agree
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("image_token_id", protocol.IMAGE_PAD),
                                                        ("video_token_id", protocol.VIDEO_PAD),
                                                        ("vision_start_token_id", protocol.VISION_START),
                                                        ("vision_end_token_id", protocol.VISION_END))}
    cfg |= ids
    t0 = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: an fp32 3B would need 15 GB first
    try:
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    finally:
        torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.save_pretrained(hf, safe_serialization=True)
    return {"n_params": n_params, "init_s": t_init, "save_s": time.perf_counter() - t0,
            "checkpoint_gib": sum(f.stat().st_size for f in hf.glob("*.safetensors")) / 2**30,
            "peak_rss_mib": rss_mib()[1]}


def dialogue(turns: int, tokens_per_frame: int):
    from app.trainer.dialogue import Dialogue, DialogueTurn, read_turn_frames

    frames = read_turn_frames(VIDEO, 1.0, 2, tokens_per_frame)[:turns]
    marked = turns // 2
    d = Dialogue("vtest-feedback", [DialogueTurn(f.time, list(f.images), QUESTION if i == 0 else "",
                                                 CORRECTION if i == marked else "NO REPLY")
                                    for i, f in enumerate(frames)], meta={"touched": [marked]})
    return d


def train(hf: Path, steps: int, turns: int, tokens_per_frame: int, threads: int) -> dict:
    import torch

    from app.trainer.encode import Encoder
    from app.trainer.feedback_job import MARKED_WEIGHT
    from app.trainer.modeling import load_policy
    from app.trainer.session_dialogues import marked_weights
    from app.trainer.sft import dialogue_loss

    torch.set_num_threads(threads)
    enc = Encoder(hf)
    d = dialogue(turns, tokens_per_frame)
    e = enc.encode(d)
    w = marked_weights(e, d, MARKED_WEIGHT)
    n_vis = int((e.input_ids == enc.image_pad).sum())
    rss0 = rss_mib()
    t0 = time.perf_counter()
    model = load_policy(hf, dtype="bfloat16", freeze_vision=True, lora=True, lora_r=16, lora_alpha=32,
                        gradient_checkpointing=True)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mib()
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95))
    out_steps = []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        loss = dialogue_loss(model, enc, e, "cpu", w)
        t_fwd = time.perf_counter() - t0
        loss.backward()
        t_bwd = time.perf_counter() - t0 - t_fwd
        with_grad = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall = time.perf_counter() - t0
        cur, peak = rss_mib()
        rec = {"step": step, "loss": float(loss.detach()), "forward_s": t_fwd, "backward_s": t_bwd,
               "step_s": wall, "grad_norm": norm, "params_with_nonzero_grad": with_grad,
               "rss_mib": cur, "peak_rss_mib": peak, "loadavg": os.getloadavg()}
        out_steps.append(rec)
        print(f"  step {step}: loss {rec['loss']:.3f}, forward {t_fwd:.1f} s, backward {t_bwd:.1f} s, "
              f"step {wall:.1f} s, RSS {cur:.0f} MiB (peak {peak:.0f}), {with_grad}/{len(params)} LoRA tensors "
              f"with a gradient, load {os.getloadavg()[0]:.1f}", flush=True)
    return {"tokens": len(e.input_ids), "visual_tokens": n_vis, "target_tokens": e.n_target_tokens,
            "turns": turns, "tokens_per_frame": tokens_per_frame, "threads": threads,
            "trainable_params": sum(p.numel() for p in params), "trainable_tensors": len(names),
            "adapter_dtype": str(params[0].dtype), "load_s": load_s, "rss_before_load_mib": rss0[0],
            "rss_after_load_mib": rss_loaded[0], "steps": out_steps,
            "peak_rss_mib": max(rss_mib()[1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="3b", choices=("3b", "small", "quick"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--tokens-per-frame", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the random checkpoint (and reuse it next time)")
    ap.add_argument("--phase", choices=("build", "train"), help=argparse.SUPPRESS)  # the child processes
    ap.add_argument("--report", help=argparse.SUPPRESS)
    args = ap.parse_args()
    hf = WORK / args.shape / "hf"
    if args.phase:  # a child: one phase, its result as JSON
        res = build(args.shape, hf) if args.phase == "build" else train(
            hf, args.steps, args.turns, args.tokens_per_frame, args.threads)
        Path(args.report).write_text(json.dumps(res))
        return 0

    info = machine_info()
    result: dict = {"machine": info, "shape": args.shape}
    me = [sys.executable, __file__, "--shape", args.shape, "--steps", str(args.steps), "--turns", str(args.turns),
          "--tokens-per-frame", str(args.tokens_per_frame), "--threads", str(args.threads)]
    WORK.mkdir(parents=True, exist_ok=True)
    for phase in ("build", "train"):
        if phase == "build" and (hf / "config.json").is_file() and any(hf.glob("*.safetensors")):
            print(f"reusing the random checkpoint in {hf}", flush=True)
            continue
        report = WORK / f"{args.shape}-{phase}.json"
        t0 = time.perf_counter()
        print(f"{phase} ...", flush=True)
        subprocess.run([*me, "--phase", phase, "--report", str(report)], check=True)
        result[phase] = json.loads(report.read_text()) | {"wall_s": time.perf_counter() - t0}
    tr = result["train"]
    rows = [[s["step"], f"{s['loss']:.3f}", f"{s['forward_s']:.1f}", f"{s['backward_s']:.1f}", f"{s['step_s']:.1f}",
             f"{s['peak_rss_mib'] / 1024:.2f}", f"{s['loadavg'][0]:.1f}"] for s in tr["steps"]]
    print_table(f"LoRA step on the {args.shape} shape: {tr['turns']} turns, {tr['tokens']} tokens "
                f"({tr['visual_tokens']} visual, {tr['target_tokens']} trained), {args.threads} threads, "
                f"{tr['trainable_params'] / 1e6:.1f} M LoRA parameters",
                ["step", "loss", "forward s", "backward s", "step s", "peak RSS GiB", "load"], rows)
    print(f"load_policy: {tr['load_s']:.1f} s, RSS after load {tr['rss_after_load_mib'] / 1024:.2f} GiB; "
          f"peak {tr['peak_rss_mib'] / 1024:.2f} GiB")
    info["loadavg_end"] = os.getloadavg()
    write_results("lora_3b" + ("" if args.shape == "3b" else f"_{args.shape}"), result)
    if not args.keep:
        shutil.rmtree(WORK / args.shape, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
