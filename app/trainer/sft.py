"""Supervised fine-tuning on proactive dialogues (docs/protocol.md §2.2).

Loss: token cross-entropy on assistant turns only (answers *and* ``NO REPLY``, each with its
``<|im_end|>``), one dialogue per forward, ``sft.batch`` dialogues per optimizer step. Vision tower
frozen by default (as MMDuet2's SFT). Full fine-tuning or LoRA (peft, language model only).

Determinism: the data order of epoch e is ``permutation(rng(seed, e))`` and the learning rate is a
function of the step, so the state needed to resume is the weights, the optimizer tensors and the
step (what app/trainer/loop.py checkpoints); a resumed run equals an uninterrupted one (tested).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from app.trainer.config import TrainConfig
from app.trainer.jobs import JobError, Reporter, StopFlag
from app.trainer.loop import Policy, open_job, train


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio·base`` (step is 1-based)."""
    if warmup and step <= warmup:
        return base * step / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def batch_indices(step: int, batch: int, n: int, seed: int) -> list[int]:
    """Dialogue indices of a 1-based step: consecutive slices of per-epoch permutations."""
    out = []
    for pos in range((step - 1) * batch, step * batch):
        epoch, i = divmod(pos, n)
        out.append(int(np.random.default_rng([seed, 7, epoch]).permutation(n)[i]))
    return out


def dialogue_loss(model: Any, enc: Any, e: Any, device: Any, weights: Any = None) -> Any:
    """Mean cross-entropy over the dialogue's trained (assistant) tokens.

    ``weights`` (one per input position, or None) scale each token's term before the mean over the
    trained tokens: the turns a user's mark changed weigh more than the replay's (docs/feedback.md).

    Logits are computed only where a trained token is predicted (``logits_to_keep``): a 152 k-word
    vocabulary at every position of a window of frames would cost ~1.5 MB a token in fp32 with its
    gradient, while the assistant tokens are a few percent of a dialogue (docs/training-estimates.md).
    """
    import torch.nn.functional as F

    labels = e.labels[1:]
    pos = (labels != -100).nonzero().squeeze(1)
    out = model(**e.model_inputs(enc.image_pad, device), logits_to_keep=pos.to(device))
    logits = out.logits[0].float()
    if weights is None:
        return F.cross_entropy(logits, labels[pos].to(logits.device))
    ce = F.cross_entropy(logits, labels[pos].to(logits.device), reduction="none")
    return (ce * weights[1:][pos].to(ce.device)).mean()


def make_judge(name: str, url: str = "", model: str = "") -> Any:
    """The recipe's judge, from the one factory in :mod:`app.eval.judges`; a bad recipe is a config error."""
    from app.core.errors import InputError
    from app.eval.judges import make_judge as build

    try:
        return build(name, url, model)
    except InputError as e:
        raise JobError("config", str(e)) from e


def run_sft(cfg: TrainConfig, reporter: Reporter, stop: StopFlag | None = None) -> Path:
    """Train; returns the final HF checkpoint folder (``<out>/sft/final``). Resumes when possible.

    The resume, the checkpoints, the evaluations and the end are :func:`app.trainer.loop.train`'s; this is
    the SFT data, model and step.
    """
    import torch

    from app.trainer import fsdp
    from app.trainer.data import heldout_subset, load_sources, training_dialogues
    from app.trainer.encode import Encoder
    from app.trainer.eval_tf import heldout_dialogues, shuffled_frames, teacher_forced
    from app.trainer.modeling import base_checkpoint, load_policy
    from app.trainer.rollout import heldout_pauc
    from app.trainer.session_dialogues import marked_weights

    job = open_job(cfg, "sft", "losses", "batch", reporter, stop)
    s, ctx, device = cfg.sft, job.ctx, job.device
    torch.manual_seed(cfg.seed)
    with ctx.main_first():  # one rank builds the tiny base and the synthetic videos, the others read them
        base = base_checkpoint(cfg)
        src = load_sources(cfg, cfg.out / "data")
    enc = Encoder(base)
    dialogues = training_dialogues(src, cfg.data.nqna_fraction, cfg.data.variants, cfg.seed,
                                   cfg.data.sessions_repeat)
    encoded = [enc.encode(d) for d in dialogues]
    weights = [marked_weights(e, d, cfg.data.sessions_weight) for e, d in zip(encoded, dialogues, strict=True)]
    held = heldout_subset(src, s.eval_limit)
    model = load_policy(base, dtype=cfg.model.dtype, device=device, freeze_vision=s.freeze_vision, lora=s.lora,
                        lora_r=s.lora_r, lora_alpha=s.lora_alpha, train_embeddings=s.train_embeddings,
                        gradient_checkpointing=s.gradient_checkpointing)
    opt_state = job.resume(model)  # before sharding: every rank starts from the whole tensors
    # Several ranks: FSDP2 shards a full fine-tune in place (its parameters become shards, so the optimizer is
    # made after), DDP replicates LoRA; either way the same weights as one process, gradients averaged.
    train_model = ctx.wrap(model, lora=s.lora, fsdp=s.fsdp)
    sharded = fsdp.is_sharded(train_model) if ctx.enabled else False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.95))
    # Under FSDP, evaluation and the final save run on rank 0 alone, on a fresh unsharded copy it gathers into.
    policy = Policy(model, opt, base, sharded,
                    plain=lambda: load_policy(base, dtype=cfg.model.dtype, device=device,
                                              freeze_vision=s.freeze_vision, train_embeddings=s.train_embeddings))
    job.resume_optimizer(policy, opt_state)
    judge = make_judge("exact")
    job.emit("start", steps=s.steps, device=device, dialogues=len(encoded), heldout=len(held),
             trainable_params=sum(p.numel() for p in params), target_tokens=sum(e.n_target_tokens for e in encoded),
             replies=sum(d.n_replies for d in dialogues), lora=s.lora, processes=ctx.world, fsdp=sharded)

    held_dlg = heldout_dialogues(src, held, cfg.seed)
    held_tf = [enc.encode(d) for d in held_dlg]
    shuf_dlg = shuffled_frames(held_dlg)
    shuf_tf = [enc.encode(d) for d in shuf_dlg]

    def evaluate(whole: Any) -> dict[str, Any]:
        """Held-out PAUC of the whole (unsharded) model, with its per-turn teacher-forced accuracy."""
        r = heldout_pauc(whole, enc, held, src.frames, judge, device=device)
        r.pop("predictions")
        # Per-turn teacher-forced accuracy, and the same with frames swapped between clips of a task:
        # if accuracy holds with the wrong frames, the model is not looking.
        r["tf"] = teacher_forced(whole, enc, held_tf, held_dlg, device)
        r["tf_shuffled"] = teacher_forced(whole, enc, shuf_tf, shuf_dlg, device)
        return r

    def sft_step(step: int) -> tuple[float, dict[str, Any]]:
        """One optimizer step over the step's ``sft.batch`` dialogues: (the loss to record, the step event's fields)."""
        lr = lr_at(step, s.lr, s.warmup, s.steps, s.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        # This rank's share of the step's global batch; DDP averages over the ranks, hence × world.
        mine = ctx.shard(batch_indices(step, s.batch, len(encoded), cfg.seed))
        for k, i in enumerate(mine):
            with ctx.no_sync(train_model, last=k == len(mine) - 1):
                loss = dialogue_loss(train_model, enc, encoded[i], device, weights[i]) / s.batch * ctx.world
                loss.backward()
            total += float(loss.detach()) / ctx.world
        total = ctx.sum([total])[0] if ctx.enabled else total
        gnorm = fsdp.grad_norm(torch.nn.utils.clip_grad_norm_(params, s.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return round(total, 6), {"loss": round(total, 5), "lr": lr, "grad_norm": round(gnorm, 4)}

    return train(job, policy, sft_step, evaluate if len(held) else None,
                 lambda state: {"loss_first": state["losses"][:1], "loss_last": state["losses"][-1:]})
