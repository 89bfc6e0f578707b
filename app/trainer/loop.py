"""The training loop that SFT and GRPO share, read top to bottom (as nanoGPT keeps one loop).

A stage (:mod:`app.trainer.sft`, :mod:`app.trainer.grpo`) opens its job (:func:`open_job`), builds its data,
model and optimizer, resumes them (:meth:`Job.resume`, :meth:`Job.resume_optimizer`), and hands :func:`train`
what is its own: what one optimizer step does and how the model is evaluated. The rest is done here, the same way
for both:

* the recipe hash (:func:`recipe_hash`): a checkpoint made under another recipe is refused, never resumed;
* each step's ``step`` event with its ETA, held-out evaluation at step 0, every ``eval_every`` steps and at the end;
* a checkpoint every ``ckpt_every`` steps, at the last step and on cancel, after which a cancelled job stops;
* the end: the final HF folder (``<out>/<stage>/final``), ``summary.json`` (the state) and the ``done`` event.

The state a checkpoint holds (``state.json``) is ``{"step", "recipe", <the stage's records>, "evals"}``: with the
weights and the optimizer tensors it is all a resumed run needs, since every random draw derives from (seed, step).

Under torchrun (app/trainer/distributed.py) every rank runs this loop; rank 0 alone evaluates, writes and reports.
A sharded (FSDP) model is gathered by every rank before rank 0 evaluates, checkpoints or saves it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

# One optimizer step's work for a stage: step (1-based) → (what the state records for it, the step event's fields).
StepFn = Callable[[int], tuple[Any, dict[str, Any]]]
# Held-out evaluation of a whole (unsharded) model: its metrics, for the state's "evals" and the eval event.
EvalFn = Callable[[Any], dict[str, Any]]


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


@dataclass
class Policy:
    """The model a stage trains, as the loop needs it: to evaluate, checkpoint and save it under any --gpus."""

    model: Any  # unwrapped: checkpoints hold its trainable tensors, the same files under any number of ranks
    opt: Any
    base: Path  # the HF folder it started from: the final folder takes its tokenizer and processor files
    sharded: bool = False  # FSDP2: each rank holds a shard; gathering is a collective every rank must join
    plain: Callable[[], Any] | None = None  # sharded only: a fresh unsharded model to load the gathered tensors into

    def whole(self, is_main: bool) -> Any:
        """The model as one process holds it, on rank 0 (None on the others when sharded). Every rank calls it."""
        if not self.sharded:
            return self.model
        from app.trainer import fsdp
        from app.trainer.modeling import load_trainable

        tensors = fsdp.full_weights(self.model)  # not full_state: that would make the optimizer step (see there)
        if not is_main:
            return None
        assert self.plain is not None, "a sharded policy needs a plain model to gather into"
        plain = self.plain()
        load_trainable(plain, tensors)
        return plain

    def full_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(trainable tensors, optimizer state_dict) as one process has them, for a checkpoint (rank 0's)."""
        from app.trainer import fsdp
        from app.trainer.modeling import trainable_state

        if self.sharded:  # every rank gathers; rank 0 gets the whole state
            return fsdp.full_state(self.model, self.opt)
        return trainable_state(self.model), self.opt.state_dict()


@dataclass
class Job:
    """One stage's run: the recipe, where this process stands among the ranks, its device and its state."""

    stage: str  # "sft" or "grpo": the recipe's section, the events' stage and the folder under out_dir
    records: str  # the state's list of per-step records: "losses" (SFT), "rewards" (GRPO)
    cfg: TrainConfig
    reporter: Reporter
    stop: StopFlag
    ctx: Any  # app.trainer.distributed.DistContext
    device: str
    state: dict[str, Any]
    resumed_from: Path | None = None

    @property
    def out(self) -> Path:
        return self.cfg.out / self.stage

    @property
    def settings(self) -> Any:
        """The recipe's section of this stage (``cfg.sft`` or ``cfg.grpo``): steps and cadences are read here."""
        return getattr(self.cfg, self.stage)

    def emit(self, event: str, **fields: Any) -> None:
        self.reporter.emit(event, stage=self.stage, **fields)

    def resume(self, model: Any) -> dict[str, Any] | None:
        """Load the latest checkpoint's weights into ``model`` (unwrapped, before any sharding: every rank starts
        from the whole tensors) and its state; its optimizer state, for :meth:`resume_optimizer`, or None."""
        from app.trainer.modeling import load_trainable

        ck = latest_checkpoint(self.out / "ckpt")
        if ck is None:
            return None
        tensors, opt_state, state = load_checkpoint(ck)
        if state.get("recipe") != self.state["recipe"]:
            raise JobError("config", f"{ck} was made with a different recipe (model/data/{self.stage} settings "
                           "changed)", f"delete {self.out} to start over, or restore the recipe", code=2)
        load_trainable(model, tensors)
        self.state, self.resumed_from = state, ck
        return opt_state

    def resume_optimizer(self, policy: Policy, opt_state: dict[str, Any] | None) -> None:
        """The checkpoint's optimizer state into the policy's optimizer (made after sharding), then the resume event."""
        if opt_state is None:
            return
        if policy.sharded:
            from app.trainer import fsdp

            fsdp.load_optimizer(policy.model, policy.opt, opt_state)
        else:
            policy.opt.load_state_dict(opt_state)
        self.emit("resume", step=self.state["step"], path=str(self.resumed_from))


def open_job(cfg: TrainConfig, stage: str, records: str, per_step: str, reporter: Reporter,
             stop: StopFlag | None) -> Job:
    """A stage's first lines: torch threads, this process's place among the ranks, the device, a fresh state.

    ``records`` names the state's list of per-step records (``losses``, ``rewards``); ``per_step`` the setting
    the ranks split each step by (``batch``, ``clips_per_step``), which the number of ranks must divide.
    """
    from app.trainer.distributed import context
    from app.trainer.modeling import pick_device

    stop = stop if stop is not None else StopFlag()  # not `stop or …`: an unset flag is falsy
    set_threads(cfg.threads)
    ctx = context()  # one process, or one rank of a torchrun job (app/trainer/distributed.py)
    ctx.check_divides(f"{stage}.{per_step}", getattr(getattr(cfg, stage), per_step))
    device, warning = (ctx.device, None) if ctx.enabled else pick_device(cfg.device)
    if warning:
        reporter.emit("warning", stage=stage, message=warning)
    state = {"step": 0, "recipe": recipe_hash(cfg, stage), records: [], "evals": []}
    return Job(stage, records, cfg, reporter, stop, ctx, device, state)


def train(job: Job, policy: Policy, step_fn: StepFn, evaluate: EvalFn | None,
          done_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """Run the stage from the state's step to the last; the final HF folder. Raises Cancelled on a stop request.

    ``step_fn(step)`` trains one step and returns (its record, appended to the state's records; the step event's
    fields); ``evaluate`` (None without a held-out set) scores a whole model; ``done_fields(state)`` is what the
    done event says of the records besides the evaluations.
    """
    ctx, s, state = job.ctx, job.settings, job.state

    def evaluate_at(step: int, whole: Any) -> None:
        assert evaluate is not None
        r = evaluate(whole)
        state["evals"].append({"step": step, **r})
        job.emit("eval", step=step, **r)

    if state["step"] == 0 and evaluate is not None:
        whole = policy.whole(ctx.is_main)
        if ctx.is_main:
            evaluate_at(0, whole)
    eta = Eta(state["step"], s.steps)
    step = state["step"]
    while step < s.steps:
        step += 1
        ctx.fault(job.stage, step)
        record, fields = step_fn(step)
        state["step"] = step
        state[job.records].append(record)
        job.emit("step", step=step, steps=s.steps, **fields, eta_s=round(eta(step), 1))
        if s.eval_every and step % s.eval_every == 0 and step < s.steps and evaluate is not None:
            whole = policy.whole(ctx.is_main)
            if ctx.is_main:
                evaluate_at(step, whole)
        stopping = ctx.any(bool(job.stop))  # every rank stops at the same step
        if step % s.ckpt_every == 0 or step == s.steps or stopping:
            if policy.sharded or ctx.is_main:
                tensors, opt_state = policy.full_state()
                if ctx.is_main:  # rank 0 writes the unwrapped model: the same files under any --gpus
                    path = save_checkpoint(job.out / "ckpt", tensors, opt_state, state)
                    job.emit("checkpoint", step=step, path=str(path))
        if stopping and step < s.steps:
            ctx.barrier()  # the checkpoint is on disk before any rank exits
            raise Cancelled()
    from app.trainer.modeling import save_hf

    final = job.out / "final"
    whole = policy.whole(ctx.is_main)
    if ctx.is_main:
        if evaluate is not None and (not state["evals"] or state["evals"][-1]["step"] != step):
            evaluate_at(step, whole)
        save_hf(whole, policy.base, final)
        (job.out / "summary.json").write_text(json.dumps(state, indent=1))
    ctx.barrier()  # a following stage (GRPO) on another rank reads this one's final folder
    job.emit("done", step=step, path=str(final), **done_fields(state),
             evals=[{k: e[k] for k in ("step", "pauc", "replies")} for e in state["evals"]])
    return final
