"""Probe a demo recipe fast: SFT for N steps, then teacher-forced per-turn accuracy on held-out clips.

    .venv/bin/python bench/train_probe.py [--set sft.steps=200 ...] [--frames-check]

Reports the loss curve, per-turn decision accuracy (speak vs ``NO REPLY``) and text accuracy (every
target token the argmax) on held-out dialogues, and the same with each held-out clip's frames swapped
for another held-out clip's of the same family: if accuracy holds there, the model is not looking.
No checkpoint is written; nothing outside a scratch out_dir is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(REPO / "models" / "recipes" / "demo.toml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--data-dir", default=str(REPO / ".cache" / "train" / "probe-data"))
    args = ap.parse_args()

    import torch

    from app.trainer.cli_worker import parse_overrides as _overrides
    from app.trainer.config import load_config
    from app.trainer.data import load_sources, training_dialogues
    from app.trainer.encode import Encoder
    from app.trainer.eval_tf import shuffled_frames, teacher_forced
    from app.trainer.jobs import set_threads
    from app.trainer.modeling import base_checkpoint, load_policy
    from app.trainer.sft import batch_indices, dialogue_loss, lr_at

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.recipe, {"out_dir": tmp, **_overrides(args.set)})
        set_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        base = base_checkpoint(cfg)
        enc = Encoder(base)
        src = load_sources(cfg, Path(args.data_dir))
        dialogues = training_dialogues(src, cfg.data.nqna_fraction, cfg.data.variants, cfg.seed)
        encoded = [enc.encode(d) for d in dialogues]
        held = training_dialogues(replace(src, train=list(src.heldout), feedback=[]), 0.0, 1, cfg.seed)
        held_enc = [enc.encode(d) for d in held]
        shuf_enc = [enc.encode(d) for d in shuffled_frames(held)]
        s = cfg.sft
        model = load_policy(base, freeze_vision=s.freeze_vision)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.95))
        print(f"setup {time.perf_counter() - t0:.1f}s; {len(encoded)} dialogues, {len(held)} held-out, "
              f"{sum(p.numel() for p in params)} params, ~{sum(len(e.input_ids) for e in encoded) / len(encoded):.0f} "
              f"tokens/dialogue", flush=True)
        print("untrained", json.dumps(teacher_forced(model, enc, held_enc, held)), flush=True)
        t1 = time.perf_counter()
        losses = []
        for step in range(1, s.steps + 1):
            lr = lr_at(step, s.lr, s.warmup, s.steps, s.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            total = 0.0
            for i in batch_indices(step, s.batch, len(encoded), cfg.seed):
                loss = dialogue_loss(model, enc, encoded[i], "cpu") / s.batch
                loss.backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total)
            if step % max(1, s.steps // 10) == 0 or step == s.steps:
                k = max(1, s.steps // 10)
                print(f"step {step} loss {sum(losses[-k:]) / len(losses[-k:]):.4f} "
                      f"({time.perf_counter() - t1:.0f}s)", flush=True)
            if step % max(1, s.steps // 3) == 0 or step == s.steps:
                print("  held", json.dumps(teacher_forced(model, enc, held_enc, held)), flush=True)
        print("final held   ", json.dumps(teacher_forced(model, enc, held_enc, held)))
        print("final shuffled", json.dumps(teacher_forced(model, enc, shuf_enc, held)))
        tr = training_dialogues(src, 0.0, 1, cfg.seed)[:40]
        print("final train  ", json.dumps(teacher_forced(model, enc, [enc.encode(d) for d in tr], tr)))
        print(f"train time {time.perf_counter() - t1:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
