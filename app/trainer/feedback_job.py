"""``duet train feedback``: the user's marked sessions → a fine-tuned model in the library.

What the Train page's "quick on my feedback" preset runs, too. Steps:

1. the base model's HF weights (``--base``: ``demo``, a model this command made earlier, or an HF
   checkpoint folder);
2. one dialogue per marked session (``app.trainer.session_dialogues.session_dialogue``: the session's frames
   re-read from its video, the model's replies changed by the marks), oversampled so that about a
   quarter of the dialogues in each epoch are the user's;
3. replay data mixed in so the model keeps what it knew: for the demo base the synthetic set it
   was trained on (a subset), for another base the ``--replay`` dataset files;
4. SFT (full fine-tune for a small base such as the demo; LoRA for a large one such as the 3B),
   with held-out PAUC before and after on clips the sessions never showed;
5. export to GGUF and registration in the model library under NEW (usable without a restart).

The recipe is built here and written to ``<out>/recipe.json``; running the same command again
resumes from the last checkpoint (the recipe's hash includes the marks, so changed feedback starts
over instead of resuming onto other data).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from app.core.paths import user_dir
from app.trainer.config import TrainConfig, _build, check
from app.trainer.jobs import JobError, Reporter, StopFlag

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "models" / "recipes" / "demo.toml"
# How much a token of a turn the user marked weighs against a replay token (docs/feedback.md: measured).
MARKED_WEIGHT = 8.0
# A base whose weights are smaller than this is fully fine-tuned; larger ones get LoRA.
FULL_FINETUNE_MAX_BYTES = 200 * 2**20
# The new model's name: a library name (app/modelhub/library.check_name) without '+' — it becomes the
# job's folder train/<name> before it becomes the library's <name>/. \A…\Z, not ^…$: "$" let "mine\n" through,
# and a name ending in "." passed here, trained for minutes, then was refused by the library at the end.
NAME_RE = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?\Z")


def data_root() -> Path:
    return user_dir("")


def job_dir(name: str) -> Path:
    """Where the job for model NAME keeps its recipe, checkpoints, progress and weights."""
    return data_root() / "train" / name


def _demo_cfg() -> TrainConfig:
    from app.trainer.config import load_config

    return load_config(DEMO_RECIPE)


def resolve_base(base: str) -> tuple[Path, bool]:
    """(HF checkpoint folder, is_demo) for ``--base``."""
    from app.trainer.bundled_demo import DEMO_MARK

    p = Path(base).expanduser()
    if (p / "config.json").is_file():
        return p, (p / DEMO_MARK).is_file()  # the bundled demo's folder trains as `--base demo` does
    if base == "demo":
        cfg = _demo_cfg()
        for out in (cfg.out, REPO / cfg.out_dir):
            for stage in ("grpo", "sft"):
                if (out / stage / "final" / "config.json").is_file():
                    return out / stage / "final", True
        try:  # none trained here: the bundled demo, read back from its GGUF (the same weights everywhere)
            from app.trainer.bundled_demo import bundled_demo_checkpoint

            return bundled_demo_checkpoint(cfg.out / "bundled" / "hf"), True
        except (OSError, ValueError) as e:
            raise JobError("missing", f"the demo model's weights are not on this machine ({e})",
                           "run `duet train demo` first (it trains them in a few minutes)", code=2) from e
    mine = job_dir(base) / "sft" / "final"
    if (mine / "config.json").is_file():
        meta = job_dir(base) / "recipe.json"
        is_demo = meta.is_file() and json.loads(meta.read_text()).get("demo_family", False)
        return mine, bool(is_demo)
    raise JobError("missing", f"--base {base!r}: not 'demo', not a model trained by `duet train feedback`, and not "
                   "an HF checkpoint folder (a folder with config.json)",
                   "pass the folder of the Hugging Face weights, e.g. a download of MMDuet2", code=2)


def marks_digest(session_dirs: list[Path]) -> str:
    from app.core.sessions import load_session

    h = hashlib.sha256()
    for d in session_dirs:
        s = load_session(d)
        h.update(s.id.encode())
        for m in s.marks:
            h.update(json.dumps(m.to_record() | {"wall": 0}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def build_recipe(base: str, name: str, session_dirs: list[Path], *, steps: int = 40, replay: list[str] | None = None,
                 out_dir: Path | None = None, lr: float | None = None, synthetic: bool = False,
                 grpo_steps: int = 0, max_steps: int | None = None, max_minutes: float = 0.0,
                 weight: float = MARKED_WEIGHT,
                 overrides: dict[str, Any] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The recipe of a job (a TrainConfig), and the raw dict it was built from.

    ``session_dirs`` are the marked sessions; ``replay`` dataset files and ``synthetic`` (the demo's
    synthetic set, per_family 12) are mixed in, and are the whole training set when no session is
    given (the Train page's "dataset folder" and "synthetic" choices). ``grpo_steps`` > 0 adds GRPO
    after SFT (it needs gold answers, so it trains on the datasets, not on the sessions).

    With sessions, training runs in rounds of ``steps`` until the exported model does what every mark asks,
    up to ``max_steps`` in all (default 4 rounds) and ``max_minutes`` (0: no time limit); the marked turns'
    tokens weigh ``weight`` times a replay token (app/trainer/feedback_run.py).

    ``overrides`` (``--set KEY=VALUE``: dotted keys, as for a recipe) are applied last, on the recipe built here:
    e.g. ``data.heldout_synthetic=false`` skips the held-out PAUC and the forgetting check (a quick trial, the
    tests). ``sft.steps``, ``out_dir`` and ``export.name`` are the command's own flags and cannot be set so.
    """
    if not NAME_RE.match(name) or name in ("demo", "tiny"):
        raise JobError("config", f"--name {name!r}: use 1–64 letters, digits, '.', '_' or '-', starting "
                                 "with a letter or digit and not ending in '.' (not 'demo' or 'tiny')",
                       "pick another name", code=2)
    if not session_dirs and not replay and not synthetic:
        raise JobError("data", "no sessions with feedback to train on",
                       "mark replies while watching (or `duet sessions feedback ID --at SECONDS --kind KIND`)", code=2)
    if grpo_steps and not replay and not synthetic:
        raise JobError("config", "GRPO needs clips with gold answers: add a dataset (--replay) or --synthetic",
                       code=2)
    if steps < 1:
        raise JobError("config", "--steps must be ≥ 1", code=2)
    max_steps = 4 * steps if max_steps is None else max_steps
    if max_steps < steps or not max_minutes >= 0:
        raise JobError("config", f"--max-steps ({max_steps}) must be ≥ --steps ({steps}) and --max-minutes ≥ 0",
                       code=2)
    hf, is_demo = resolve_base(base)
    size = sum(f.stat().st_size for f in hf.glob("*.safetensors"))
    lora = size > FULL_FINETUNE_MAX_BYTES
    out = Path(out_dir) if out_dir else job_dir(name)
    data: dict[str, Any] = {"sessions": [str(d) for d in session_dirs], "sessions_digest": marks_digest(session_dirs),
                            "train_synthetic": False, "heldout_synthetic": False,
                            "train_files": list(replay or []), "nqna_fraction": 0.0}
    raw: dict[str, Any] = {"out_dir": str(out), "seed": 0, "device": "auto", "model": {"base": str(hf)}}
    if is_demo or synthetic:
        demo = _demo_cfg()
        d = demo.data
        data.update(interval=d.interval, frames_per_turn=d.frames_per_turn, tokens_per_frame=d.tokens_per_frame,
                    nqna_fraction=d.nqna_fraction)
        if d.train_synthetic is not None and (is_demo or synthetic):  # replay: a subset of the demo's training set
            t = d.train_synthetic
            data["train_synthetic"] = {"families": t.families, "difficulties": t.difficulties, "per_family": 48,
                                       "seed": t.seed, "size": t.size}
        if d.heldout_synthetic is not None:  # held-out: the demo's own held-out clips
            h = d.heldout_synthetic
            data["heldout_synthetic"] = {"families": h.families, "difficulties": h.difficulties,
                                         "per_family": h.per_family, "seed": h.seed, "size": h.size}
    n_replay = 96 if (is_demo or synthetic) else 0
    data["sessions_repeat"] = max(1, round(n_replay / (3 * len(session_dirs)))) if session_dirs else 1
    if session_dirs:
        data["sessions_weight"] = weight
    raw["data"] = data
    raw["sft"] = {"steps": steps, "batch": 4, "lr": lr if lr is not None else (5e-4 if not lora else 1e-4),
                  # constant after warm-up when rounds may extend the run (a cosine's end moves with the total)
                  "warmup": min(5, steps), "min_lr_ratio": 1.0 if session_dirs else 0.1, "lora": lora,
                  "freeze_vision": True,
                  "ckpt_every": max(1, min(25, steps)), "eval_every": 0, "gradient_checkpointing": lora}
    if lora:
        raw["model"]["dtype"] = "bfloat16"  # the 3B: bf16 weights (docs/training-estimates.md)
    else:
        raw["threads"] = 1  # a small model on the CPU: more threads fight the app for cores (models/recipes/demo.toml)
    if grpo_steps:
        raw["grpo"] = {"steps": grpo_steps, "lora": lora, "lr": 1e-4 if not lora else 1e-5, "ckpt_every": 4,
                       "freeze_vision": True}
    raw["export"] = {"name": name, "source": "trained", "quant": "Q8_0", "stage": "grpo" if grpo_steps else "sft"}
    _apply_overrides(raw, overrides or {})
    try:
        cfg = _build(TrainConfig, raw, f"duet train feedback --name {name}")
        cfg.path = str(out / "recipe.json")
        check(cfg)
    except ValueError as e:
        raise JobError("config", str(e), code=2) from e
    extra: dict[str, Any] = {"demo_family": is_demo}
    if session_dirs:
        extra["budget"] = {"round_steps": steps, "max_steps": max_steps, "max_minutes": max_minutes}
    return cfg, raw | extra


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """``--set`` on a feedback recipe: dotted keys set in ``raw`` (a bad key is a config error, before any work)."""
    flags = {"sft.steps": "--steps", "out_dir": "--name", "export.name": "--name"}
    for dotted, value in overrides.items():
        if dotted in flags:
            raise JobError("config", f"--set {dotted}: use {flags[dotted]} for that", code=2)
        node: Any = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            if node.get(k) is None or node.get(k) is False:
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise JobError("config", f"--set {dotted}: {k} is not a table in this recipe", code=2)
        node[leaf] = value


def run_feedback(cfg: TrainConfig, raw: dict[str, Any], reporter: Reporter, stop: StopFlag | None = None, *,
                 parity: bool = False, library_root: Path | None = None) -> Any:
    """Train, export + register; writes ``<out>/summary.json`` (PAUC before/after).

    With marked sessions (and no GRPO): :func:`app.trainer.feedback_run.run_sessions_job` (refuses when there is
    nothing to learn, trains until each correction is said or the budget is spent, checks the held-out clips;
    ``<out>/feedback_report.json``). Without: SFT (then GRPO) on the datasets, as a recipe would.

    Every rank of a ``--gpus N`` job calls this: all of them train; rank 0 alone writes the recipe, verifies,
    exports, registers and writes the summary (the others return None).
    """
    from app.trainer.distributed import context
    from app.trainer.export import run_export
    from app.trainer.sft import run_sft

    main = context().is_main
    cfg.out.mkdir(parents=True, exist_ok=True)
    if main:
        (cfg.out / "recipe.json").write_text(json.dumps(raw, indent=1))
    reporter.emit("start", stage="feedback", name=cfg.export.name, base=cfg.model.base,
                  sessions=len(cfg.data.sessions), lora=cfg.sft.lora, steps=cfg.sft.steps,
                  budget=raw.get("budget"), processes=context().world)
    report: dict[str, Any] = {}
    if cfg.data.sessions and not raw.get("grpo"):
        from app.trainer.feedback_run import REPORT, run_sessions_job

        entry, report = run_sessions_job(cfg, raw, reporter, stop, parity=parity, library_root=library_root)
    else:
        run_sft(cfg, reporter, stop)
        if raw.get("grpo"):
            from app.trainer.grpo import run_grpo

            run_grpo(cfg, reporter, stop)
        entry = run_export(cfg, reporter, parity=parity, library_root=library_root) if main else None
    if not main:
        return None
    sft = json.loads((cfg.out / "sft" / "summary.json").read_text())
    evals = sft.get("evals", [])
    summary = {"name": entry.name, "model": str(entry.model), "base": cfg.model.base, "lora": cfg.sft.lora,
               "sessions": cfg.data.sessions, "steps": sft.get("step", cfg.sft.steps), "losses": sft.get("losses", []),
               "pauc_before": evals[0]["pauc"] if evals else None,
               "pauc_after": evals[-1]["pauc"] if len(evals) > 1 else None}
    if report:
        summary |= {"learned": report["learned"], "corrections": report["summary"],
                    "report": str(cfg.out / REPORT)}
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    reporter.emit("done", stage="feedback", name=entry.name, model=str(entry.model),
                  pauc_before=summary["pauc_before"], pauc_after=summary["pauc_after"],
                  summary=str(cfg.out / "summary.json"), learned=report.get("learned"),
                  corrections=report.get("summary"), verdicts=report.get("verdicts"),
                  forgetting=_forgetting_brief(report.get("forgetting")))
    return entry


def _forgetting_brief(f: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held-out comparison in a few numbers (the full lists stay in the report file)."""
    if not f:
        return None
    return {"clips": f["clips"], "turns": f["turns"], "decisions_changed": len(f["decisions_changed"]),
            "decisions_unexplained": len(f.get("decisions_unexplained", [])),
            "texts_changed": len(f["texts_changed"]), "pauc_base": f["pauc_base"], "pauc_new": f["pauc_new"],
            "one_reply_noise": f["one_reply_noise"]["mean"], "within_noise": f["within_noise"]}
