"""Multi-turn GRPO with the PAUC reward (docs/protocol.md §2.4–§2.6).

One step: ``clips_per_step`` clips, ``group`` rollouts each, played turn by turn by the current
policy with the paper's sampling (T = 1.2, top-k 10) on one KV cache per clip
(:class:`app.trainer.rollout.TurnCache`; no gradients). Each rollout's reward is
:func:`app.trainer.reward.pauc_reward`; the advantage is the group-normalised reward
``(r − mean) / (std + ε)`` applied to every sampled assistant token (user/frame tokens masked);
the loss is PPO's clipped surrogate (ε = 0.2), token-mean over the step, no KL and no entropy term
(as the run scripts), on one full forward with gradients over each finished rollout's transcript
(its log-probs equal those the cached rollout sampled with: tests/trainer/test_rollout.py).
With ``ppo_epochs = 1`` and one mini-batch (the paper's setting) the ratio is exactly 1 and the
clipped loss reduces to the policy gradient; more epochs exercise the clip.

Rollout seeds derive from (seed, step, clip, member), so a resumed run replays the same rollouts.
With ``--gpus N`` (app/trainer/distributed.py) each rank rolls out every N-th clip of the step (its whole
group, so advantages need nothing from the other ranks), the rewards are summed into one table that every
rank reports from, and the gradients of all ranks are summed before the clip and the optimizer step: the
same rollouts and the same update as one process, whatever N.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from app.trainer.config import TrainConfig
from app.trainer.jobs import JobError, Reporter, StopFlag
from app.trainer.loop import Policy, open_job, train

ADV_EPS = 1e-6
# What each rollout's reward contributes to a step's record; ranks sum them as one table (RewardParts' fields).
REWARD_FIELDS = ("total", "pauc", "rep", "in_span", "pfx", "n_replies")


def group_advantages(rewards: list[float]) -> list[float]:
    """GRPO: (r − mean) / (std + ε) within a group (population std; all-equal rewards → zeros)."""
    m = statistics.fmean(rewards)
    sd = statistics.pstdev(rewards)
    return [(r - m) / (sd + ADV_EPS) for r in rewards]


def clipped_loss_sum(logp: Any, old_logp: Any, adv: float, clip: float) -> Any:
    """Σ over tokens of −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A), ρ = exp(logp − old)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv).sum()


def token_logps(model: Any, enc: Any, e: Any, device: Any) -> Any:
    """Log-probabilities of the labelled (sampled assistant) tokens, in sequence order."""
    import torch

    out = model(**e.model_inputs(enc.image_pad, device))
    logits = out.logits[0, :-1].float()
    labels = e.labels[1:].to(logits.device)
    mask = labels != -100
    lp = torch.log_softmax(logits[mask], dim=-1)
    return lp.gather(1, labels[mask].unsqueeze(1)).squeeze(1)


def rollout_seed(seed: int, step: int, clip: int, member: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + clip * 101 + member) % (2**31 - 1)


def run_grpo(cfg: TrainConfig, reporter: Reporter, stop: StopFlag | None = None) -> Path:
    """Train from ``<out>/sft/final``; returns the final HF checkpoint folder (``<out>/grpo/final``). Resumes when
    possible.

    The resume, the checkpoints, the evaluations and the end are :func:`app.trainer.loop.train`'s; this is
    the GRPO data, model and step.
    """
    import torch

    from app.trainer.data import heldout_subset, load_sources
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.reward import EvalJudgeReward, Weights, gold_spans, pauc_reward
    from app.trainer.rollout import heldout_pauc, play, stream_dialogue
    from app.trainer.sft import batch_indices, make_judge

    g = cfg.grpo
    start = cfg.out / "sft" / "final"
    if not (start / "config.json").is_file():
        raise JobError("missing", f"no SFT model at {start}", "run `duet train sft` with the same recipe first", code=2)
    job = open_job(cfg, "grpo", "rewards", "clips_per_step", reporter, stop)
    ctx, device = job.ctx, job.device
    enc = Encoder(start)
    with ctx.main_first():  # one rank generates the synthetic videos, the others read them
        src = load_sources(cfg, cfg.out / "data")
    clips = src.train
    if not clips:
        raise JobError("data", "GRPO needs videos with timed answers (data.train_synthetic or data.train_files)",
                       code=2)
    held = heldout_subset(src, g.eval_limit)
    model = load_policy(start, dtype=cfg.model.dtype, device=device, freeze_vision=g.freeze_vision, lora=g.lora,
                        lora_r=g.lora_r, lora_alpha=g.lora_alpha)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=g.lr, weight_decay=g.weight_decay)
    policy = Policy(model, opt, start)  # full replicas on every rank: GRPO sums the gradients itself
    job.resume_optimizer(policy, job.resume(model))
    eval_judge = make_judge(g.judge, g.judge_url, g.judge_model)
    judge = EvalJudgeReward(eval_judge)
    weights = Weights(g.w_pauc, g.w_rep, g.w_in_span, g.w_pfx)
    job.emit("start", steps=g.steps, device=device, clips=len(clips), group=g.group, clips_per_step=g.clips_per_step,
             judge=judge.id, processes=ctx.world)

    def evaluate(whole: Any) -> dict[str, Any]:
        """Held-out PAUC of the policy, greedy, with the recipe's judge."""
        r = heldout_pauc(whole, enc, held, src.frames, eval_judge, g.max_new_tokens, device)
        r.pop("predictions")
        return r

    def grpo_step(step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Roll out the step's clips, then the clipped update: (the step's reward record, the step event's fields)."""
        batch: list[tuple[Any, float]] = []  # (encoded rollout, advantage)
        # Each rank rolls out its share of the step's clips (a whole group each: advantages stay local);
        # the rewards are then summed into one table that every rank holds.
        table = torch.zeros(g.clips_per_step, g.group, len(REWARD_FIELDS), dtype=torch.float64)
        for ci, idx in enumerate(batch_indices(step, g.clips_per_step, len(clips), cfg.seed + 1)):
            if ci % ctx.world != ctx.rank:
                continue
            ex = clips[idx]
            dlg = stream_dialogue(ex, src.frames[ex.id])
            gold = gold_spans(ex)
            group = []
            for m in range(g.group):
                r = play(model, enc, dlg, sample=True, temperature=g.temperature, top_k=g.top_k,
                         max_new_tokens=g.max_new_tokens, seed=rollout_seed(cfg.seed, step, ci, m), device=device)
                parts = pauc_reward(r.times, r.texts, gold, judge, weights=weights, prefix_chars=g.prefix_chars)
                group.append((r, parts))
                table[ci, m] = torch.tensor([float(getattr(parts, f)) for f in REWARD_FIELDS], dtype=torch.float64)
            advs = group_advantages([p.total for _, p in group])
            for (r, _), a in zip(group, advs, strict=True):
                if abs(a) > 1e-8:
                    batch.append((enc.encode(dlg, targets=r.reply_ids), a))
        table = ctx.sum_tensor(table)
        local_tokens = sum(e.n_target_tokens for e, _ in batch)
        n_tokens, n_trained = ctx.sum([local_tokens, len(batch)]) if ctx.enabled else (local_tokens, len(batch))
        loss_total = 0.0
        if n_tokens:
            olds: list[Any] = []
            for epoch in range(g.ppo_epochs):
                for k, (e, a) in enumerate(batch):
                    lp = token_logps(model, enc, e, device)
                    if epoch == 0:
                        olds.append(lp.detach())
                    loss = clipped_loss_sum(lp, olds[k], a, g.clip) / n_tokens
                    loss.backward()
                    loss_total += float(loss.detach())
                ctx.sum_grads(params)
                torch.nn.utils.clip_grad_norm_(params, g.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            loss_total = ctx.sum([loss_total])[0] if ctx.enabled else loss_total
        rows = table.reshape(-1, len(REWARD_FIELDS)).tolist()
        mean = {k: statistics.fmean(r[i] for r in rows) for i, k in enumerate(REWARD_FIELDS)}
        rec = {"step": step, "reward": mean["total"], "pauc": mean["pauc"], "rep": mean["rep"],
               "in_span": mean["in_span"], "pfx": mean["pfx"], "replies_per_rollout": mean["n_replies"],
               "trained_rollouts": int(n_trained), "loss": loss_total}
        return rec, {k: (round(v, 5) if isinstance(v, float) else v) for k, v in rec.items() if k != "step"}

    return train(job, policy, grpo_step, evaluate if len(held) else None,
                 lambda state: {"rewards": [round(r["reward"], 4) for r in state["rewards"]]})
