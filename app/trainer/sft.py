"""Supervised fine-tuning on proactive dialogues (docs/protocol.md §2.2).

Loss: token cross-entropy on assistant turns only (answers *and* ``NO REPLY``, each with its
``<|im_end|>``), one dialogue per forward, ``sft.batch`` dialogues per optimizer step. Vision tower
frozen by default (as MMDuet2's SFT). Full fine-tuning or LoRA (peft, language model only).

Determinism: the data order of epoch e is ``permutation(rng(seed, e))`` and the learning rate is a
function of the step, so the state needed to resume is the weights, the optimizer tensors and the
step; a resumed run equals an uninterrupted one (tested).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.trainer.config import TrainConfig
from app.trainer.jobs import (
    Cancelled,
    Eta,
    JobError,
    Reporter,
    StopFlag,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_threads,
)


def recipe_hash(cfg: TrainConfig, stage: str) -> str:
    """What a checkpoint's validity depends on (step counts and logging cadence excluded)."""
    skip = {"steps", "ckpt_every", "eval_every", "eval_limit", "fsdp"}  # fsdp: how N ranks hold it, not what
    data = asdict(cfg.data)
    # Keys added with session training are left out at their defaults, and the old (empty) feedback_files
    # key kept, so checkpoints made before them (the cached demo model) stay valid.
    for key, default in (("sessions", []), ("sessions_repeat", 1), ("sessions_digest", ""), ("window_turns", 32),
                         ("sessions_weight", 1.0)):
        if data.get(key) == default:
            data.pop(key)
    data.setdefault("feedback_files", [])
    d = {"seed": cfg.seed, "model": asdict(cfg.model), "data": data,
         stage: {k: v for k, v in asdict(getattr(cfg, stage)).items() if k not in skip}}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


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


def _heldout(cfg: TrainConfig, limit: int, src: Any) -> Any:
    from app.eval.dataset import Dataset

    exs = list(src.heldout)
    return Dataset(exs[:limit] if limit else exs)


def run_sft(cfg: TrainConfig, reporter: Reporter, stop: StopFlag | None = None) -> Path:
    """Train; returns the final HF checkpoint folder (``<out>/sft/final``). Resumes when possible."""
    import torch

    from app.trainer import fsdp
    from app.trainer.data import load_sources, training_dialogues
    from app.trainer.distributed import context
    from app.trainer.encode import Encoder
    from app.trainer.eval_tf import heldout_dialogues, shuffled_frames, teacher_forced
    from app.trainer.modeling import (
        base_checkpoint,
        load_policy,
        load_trainable,
        pick_device,
        save_hf,
        trainable_state,
    )
    from app.trainer.rollout import heldout_pauc

    stop = stop if stop is not None else StopFlag()  # not `stop or …`: an unset flag is falsy
    s = cfg.sft
    out = cfg.out / "sft"
    final = out / "final"
    set_threads(cfg.threads)
    ctx = context()  # one process, or one rank of a torchrun job (app/trainer/distributed.py)
    ctx.check_divides("sft.batch", s.batch)
    device, warning = (ctx.device, None) if ctx.enabled else pick_device(cfg.device)
    if warning:
        reporter.emit("warning", stage="sft", message=warning)
    torch.manual_seed(cfg.seed)
    with ctx.main_first():  # one rank builds the tiny base and the synthetic videos, the others read them
        base = base_checkpoint(cfg)
        src = load_sources(cfg, cfg.out / "data")
    enc = Encoder(base)
    dialogues = training_dialogues(src, cfg.data.nqna_fraction, cfg.data.variants, cfg.seed,
                                   cfg.data.sessions_repeat)
    encoded = [enc.encode(d) for d in dialogues]
    from app.trainer.session_dialogues import marked_weights

    weights = [marked_weights(e, d, cfg.data.sessions_weight) for e, d in zip(encoded, dialogues, strict=True)]
    held = _heldout(cfg, s.eval_limit, src)
    model = load_policy(base, dtype=cfg.model.dtype, device=device, freeze_vision=s.freeze_vision, lora=s.lora,
                        lora_r=s.lora_r, lora_alpha=s.lora_alpha, train_embeddings=s.train_embeddings,
                        gradient_checkpointing=s.gradient_checkpointing)
    h = recipe_hash(cfg, "sft")
    state: dict[str, Any] = {"step": 0, "recipe": h, "losses": [], "evals": []}
    ck = latest_checkpoint(out / "ckpt")
    opt_state = None
    if ck is not None:
        tensors, opt_state, st = load_checkpoint(ck)
        if st.get("recipe") != h:
            raise JobError("config", f"{ck} was made with a different recipe (model/data/sft settings changed)",
                           f"delete {out} to start over, or restore the recipe", code=2)
        load_trainable(model, tensors)  # before sharding: every rank starts from the whole tensors
        state = st
    # Several ranks: FSDP2 shards a full fine-tune in place (its parameters become shards, so the optimizer is
    # made after), DDP replicates LoRA; either way the same weights as one process, gradients averaged.
    train_model = ctx.wrap(model, lora=s.lora, fsdp=s.fsdp)
    sharded = fsdp.is_sharded(train_model) if ctx.enabled else False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.95))
    if opt_state is not None:
        if sharded:
            fsdp.load_optimizer(model, opt, opt_state)
        else:
            opt.load_state_dict(opt_state)
        reporter.emit("resume", stage="sft", step=state["step"], path=str(ck))

    def whole_model() -> Any:
        """The model as one process holds it, on rank 0: under FSDP every rank gathers the trained tensors into
        a fresh unsharded copy on rank 0 (evaluation and the final save run on rank 0 alone)."""
        if not sharded:
            return model
        tensors, _ = fsdp.full_state(model, opt)
        if not ctx.is_main:
            return None
        plain = load_policy(base, dtype=cfg.model.dtype, device=device, freeze_vision=s.freeze_vision,
                            train_embeddings=s.train_embeddings)
        load_trainable(plain, tensors)
        return plain
    judge = make_judge("exact")
    n_trained = sum(p.numel() for p in params)
    reporter.emit("start", stage="sft", steps=s.steps, device=device, dialogues=len(encoded),
                  heldout=len(held), trainable_params=n_trained,
                  target_tokens=sum(e.n_target_tokens for e in encoded),
                  replies=sum(d.n_replies for d in dialogues), lora=s.lora, processes=ctx.world,
                  fsdp=sharded)

    held_dlg = heldout_dialogues(src, held, cfg.seed)
    held_tf = [enc.encode(d) for d in held_dlg]
    shuf_dlg = shuffled_frames(held_dlg)
    shuf_tf = [enc.encode(d) for d in shuf_dlg]

    def evaluate(step: int, model: Any) -> None:
        r = heldout_pauc(model, enc, held, src.frames, judge, device=device)
        r.pop("predictions")
        # Per-turn teacher-forced accuracy, and the same with frames swapped between clips of a task:
        # if accuracy holds with the wrong frames, the model is not looking.
        r["tf"] = teacher_forced(model, enc, held_tf, held_dlg, device)
        r["tf_shuffled"] = teacher_forced(model, enc, shuf_tf, shuf_dlg, device)
        state["evals"].append({"step": step, **r})
        reporter.emit("eval", stage="sft", step=step, **r)

    if state["step"] == 0 and len(held) and (ctx.is_main or sharded):
        whole = whole_model()
        if ctx.is_main:
            evaluate(0, whole)
    eta = Eta(state["step"], s.steps)
    step = state["step"]
    while step < s.steps:
        step += 1
        ctx.fault("sft", step)
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
        state["step"] = step
        state["losses"].append(round(total, 6))
        reporter.emit("step", stage="sft", step=step, steps=s.steps, loss=round(total, 5), lr=lr,
                      grad_norm=round(gnorm, 4), eta_s=round(eta(step), 1))
        if s.eval_every and step % s.eval_every == 0 and step < s.steps and len(held) and (ctx.is_main or sharded):
            whole = whole_model()
            if ctx.is_main:
                evaluate(step, whole)
        stopping = ctx.any(bool(stop))  # every rank stops at the same step
        want_ckpt = step % s.ckpt_every == 0 or step == s.steps or stopping
        if want_ckpt and sharded:  # every rank gathers; rank 0 gets the whole state
            ck_tensors, ck_opt = fsdp.full_state(model, opt)
        elif want_ckpt and ctx.is_main:
            ck_tensors, ck_opt = trainable_state(model), opt.state_dict()
        if want_ckpt and ctx.is_main:  # rank 0 writes the unwrapped model: the same files under any --gpus
            path = save_checkpoint(out / "ckpt", ck_tensors, ck_opt, state)
            reporter.emit("checkpoint", stage="sft", step=step, path=str(path))
        if stopping and step < s.steps:
            ctx.barrier()  # the checkpoint is on disk before any rank exits
            raise Cancelled()
    whole = whole_model()
    if ctx.is_main:
        if len(held) and (not state["evals"] or state["evals"][-1]["step"] != step):
            evaluate(step, whole)
        save_hf(whole, base, final)
        (out / "summary.json").write_text(json.dumps({k: v for k, v in state.items()}, indent=1))
    ctx.barrier()  # a following stage (GRPO) on another rank reads sft/final
    reporter.emit("done", stage="sft", step=step, path=str(final), loss_first=state["losses"][:1],
                  loss_last=state["losses"][-1:], evals=[{k: e[k] for k in ("step", "pauc", "replies")}
                                                         for e in state["evals"]])
    return final
