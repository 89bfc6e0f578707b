"""``duet train export-config RECIPE --engine verl|trl --out DIR``: a recipe's GRPO job for a cluster trainer.

MMDuet2 itself was trained with verl on 8 GPUs; a lab with a cluster should be able to run Duet's recipe
there rather than on Duet's trainer. The folder written holds:

* ``frames/<clip>/<turn>-<k>.png``: every clip's frames per turn, exactly as Duet's trainer and the engine feed
  them (read at the recipe's interval, frames per turn and token budget), named in the data by absolute path
  (the engines' workers do not run in the folder): export where the job will read it (a shared file system);
* the data, one clip a line (JSON Lines), in the engine's dataset format: verl's ``train.json`` /
  ``val.json`` (its RLHFDataset reads ``.parquet`` or ``.json``, the latter with ``datasets``' JSON loader,
  which takes JSON Lines): ``data_source``, ``prompt`` (system + the first user turn, frames as ``<image>``),
  ``images``, ``ability``, ``reward_model.ground_truth`` (the gold spans as JSON), ``extra_info`` (``index``,
  ``turn_times``, and every turn in ``turns`` for a multi-turn rollout); trl's ``train.jsonl`` /
  ``val.jsonl``: ``prompt`` (conversational, with ``{"type": "image"}`` parts), ``images``, and the
  reward's columns ``gold_spans`` and ``turn_times``, which GRPOTrainer passes to the reward function;
* ``duet_pauc_reward.py``: MMDuet2's PAUC reward (app/trainer/reward.py, with the recipe's judge and weights)
  as one self-contained file, importable without Duet: verl's ``compute_score(data_source, solution_str,
  ground_truth, extra_info)`` and trl's ``stream_reward(completions, gold_spans, turn_times, **kwargs)``;
* the recipe: ``duet_recipe.json`` (the whole Duet recipe) and the engine's command line with Duet's GRPO
  hyper-parameters mapped onto its options (``run_verl.sh``, or ``train_trl.py``).

A stream is many turns, each new frames and a reply; both engines generate one completion per prompt unless
given a multi-turn rollout (verl's interaction/agent loop, trl's ``rollout_func``), which is the cluster's
to plug in: the later turns are in the data for it. The reward scores a whole stream's replies: verl's
decoded multi-turn text ("…\\nuser\\n…\\nassistant\\n…", as MMDuet2's own reward parses it), a trl
conversation's assistant messages in order, or one reply per line. Only the offline judges (``exact``,
``overlap``) travel in the file; an ``llm`` judge is refused with what to do instead.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.trainer.config import TrainConfig
from app.trainer.jobs import EXIT_BAD_INPUT, JobError, Reporter

ENGINES = ("verl", "trl")
REWARD_FILE = "duet_pauc_reward.py"
DATA_SOURCE = "duet/proactive-video"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_config(cfg: TrainConfig, engine: str, out: Path, reporter: Reporter) -> Path:
    """Write the folder; returns it. Refuses an unknown engine or a judge that cannot travel in a file."""
    from app.trainer.data import load_sources

    if engine not in ENGINES:
        raise JobError("config", f"--engine {engine!r}: use verl or trl", code=EXIT_BAD_INPUT)
    if cfg.grpo.judge not in ("exact", "overlap"):
        raise JobError("config", f"grpo.judge = {cfg.grpo.judge!r} calls a server, which the exported reward cannot "
                       "take along", "--set grpo.judge=\"overlap\" (or \"exact\" for templated answers), or replace "
                       f"JUDGE in {REWARD_FILE} with a call to your judge", code=EXIT_BAD_INPUT)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = load_sources(cfg, cfg.out / "data")
    if not src.train:
        raise JobError("data", "the recipe has no videos with timed answers to export (data.train_synthetic or "
                       "data.train_files)", code=EXIT_BAD_INPUT)
    splits = {"train": src.train, "val": list(src.heldout)}
    counts = {}
    for split, examples in splits.items():
        rows = [_row(engine, i, ex, src.frames[ex.id], out) for i, ex in enumerate(examples)]
        name = f"{split}.json" if engine == "verl" else f"{split}.jsonl"
        if rows:
            (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        counts[split] = len(rows)
    (out / REWARD_FILE).write_text(reward_source(cfg, engine), encoding="utf-8")
    (out / "duet_recipe.json").write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8")
    model = _model_path(cfg)
    if engine == "verl":
        script = out / "run_verl.sh"
        script.write_text(verl_command(cfg, out, model, counts["val"] > 0), encoding="utf-8")
    else:
        script = out / "train_trl.py"
        script.write_text(trl_script(cfg, model), encoding="utf-8")
    script.chmod(0o755)
    reporter.emit("done", stage="export-config", engine=engine, path=str(out), clips=counts["train"],
                  heldout=counts["val"], reward=str(out / REWARD_FILE), command=str(script))
    return out


def _model_path(cfg: TrainConfig) -> str:
    """The checkpoint to start GRPO from: this recipe's SFT model when trained, else its base."""
    sft = cfg.out / "sft" / "final"
    if (sft / "config.json").is_file():
        return str(sft.resolve())
    if cfg.model.base == "tiny":
        from app.trainer.modeling import base_checkpoint

        return str(base_checkpoint(cfg))
    return str(Path(cfg.model.base).expanduser())


def _clip(ex: Any, frames: list[Any], out: Path) -> dict[str, Any]:
    """A clip's turns (time, frame files, question text) and gold spans; writes the frames."""
    from PIL import Image

    from app.trainer.reward import gold_spans
    from app.trainer.rollout import stream_dialogue

    dlg = stream_dialogue(ex, frames)
    folder = Path("frames") / _SAFE.sub("_", ex.id)
    (out / folder).mkdir(parents=True, exist_ok=True)
    turns = []
    for t, turn in enumerate(dlg.turns):
        paths = []
        for k, img in enumerate(turn.images):
            rel = folder / f"{t:04d}-{k}.png"
            Image.fromarray(img).save(out / rel)
            paths.append(str((out / rel).resolve()))  # absolute: the engines' workers do not run in this folder
        turns.append({"time": turn.time, "images": paths, "text": turn.user_text})
    gold = [{"content": g.content, "question": g.question, "span": list(g.span)} for g in gold_spans(ex)]
    return {"id": ex.id, "turns": turns, "gold": gold}


def _row(engine: str, index: int, ex: Any, frames: list[Any], out: Path) -> dict[str, Any]:
    from app.core import protocol

    c = _clip(ex, frames, out)
    first = c["turns"][0]
    times = [t["time"] for t in c["turns"]]
    gold = json.dumps(c["gold"], ensure_ascii=False)
    if engine == "verl":
        return {"data_source": DATA_SOURCE, "ability": "proactive_video",
                "prompt": [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                           {"role": "user", "content": "<image>" * len(first["images"]) + first["text"]}],
                "images": [{"image": p} for p in first["images"]],
                "reward_model": {"style": "rule", "ground_truth": gold},
                "extra_info": {"index": index, "id": c["id"], "turn_times": times, "turns": c["turns"]}}
    content = [{"type": "image"} for _ in first["images"]] + ([{"type": "text", "text": first["text"]}]
                                                              if first["text"] else [])
    return {"id": c["id"], "prompt": [{"role": "system", "content": protocol.SYSTEM_PROMPT},
                                      {"role": "user", "content": content}],
            "images": first["images"], "turns": c["turns"], "turn_times": times, "gold_spans": gold}


def load_exported(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Read an exported folder back: per split, each clip's ``id``, ``turns`` (with frames as arrays) and ``gold``.

    What the tests compare with the recipe's own clips (the data round-trip), and a way to check a folder
    after copying it to a cluster.
    """
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.jsonl")]):
        split = path.name.split(".")[0]
        if split not in ("train", "val"):
            continue
        clips = []
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            verl = "extra_info" in r
            turns = r["extra_info"]["turns"] if verl else r["turns"]
            gold = json.loads(r["reward_model"]["ground_truth"] if verl else r["gold_spans"])
            clips.append({"id": r["extra_info"]["id"] if verl else r["id"], "gold": gold,
                          "turns": [{"time": t["time"], "text": t["text"],
                                     "images": [np.asarray(Image.open(folder / p).convert("RGB")) for p in t["images"]]}
                                    for t in turns]})
        out[split] = clips
    return out


# ---------------------------------------------------------------------------------------------
# the reward as one self-contained file


def reward_source(cfg: TrainConfig, engine: str) -> str:
    """The PAUC reward's source, assembled from Duet's own functions (not a copy that could drift from them)."""
    from app.core import text
    from app.eval import judges, pauc
    from app.trainer import reward

    g = cfg.grpo
    src = inspect.getsource
    parts = [
        f'"""MMDuet2\'s PAUC reward for {engine}, written by `duet train export-config` from Duet\'s '
        "app/trainer/reward.py.\n\nSelf-contained (Python 3.10+, standard library only). "
        + ("verl: custom_reward_function.path=<this file>, custom_reward_function.name=compute_score."
           if engine == "verl" else "trl: GRPOTrainer(reward_funcs=[stream_reward], …).") + '\n"""',
        "from __future__ import annotations\n\nimport json\nimport os\nimport re\n"
        "from collections.abc import Sequence\nfrom dataclasses import dataclass\nfrom typing import Any\n",
        f"NO_REPLY = {reward.NO_REPLY!r}",
        f"WORD = re.compile({text.WORD.pattern!r})",
        src(text.words), src(text.normalise),
        f"_STOP = frozenset({sorted(judges._STOP)!r})",
        f"_SENTENCE = re.compile({judges._SENTENCE.pattern!r})",
        src(judges.content_words), src(judges.token_f1), src(judges.OverlapJudge), src(judges.ExactMatchJudge),
        f"MAX_SCORE = {pauc.MAX_SCORE!r}\nHEADLINE_OMEGA = {pauc.HEADLINE_OMEGA!r}\nSTART_SCORE = {pauc.START_SCORE!r}\n"
        "Point = tuple[float, float]",
        src(pauc.area_under_line_ratio),
        "# the reward's own scale (app/trainer/reward.py): these override the metric's constants above\n"
        f"MAX_SCORE = {reward.MAX_SCORE!r}\nSTART_SCORE = {reward.START_SCORE!r}\nOMEGA = {reward.OMEGA!r}\n"
        f"PREFIX_CHARS = {g.prefix_chars!r}",
        src(reward.GoldSpan), src(reward.RewardParts), src(reward.Weights),
        f"_ASSISTANT = re.compile({reward._ASSISTANT.pattern!r}, re.DOTALL)",
        src(reward.parse_response), src(reward.common_prefix_len), src(reward.pauc_reward),
        _ADAPTER,
        f"JUDGE = JudgeReward({'ExactMatchJudge()' if g.judge == 'exact' else 'OverlapJudge()'})\n"
        f"WEIGHTS = Weights({g.w_pauc!r}, {g.w_rep!r}, {g.w_in_span!r}, {g.w_pfx!r})",
        _VERL if engine == "verl" else _TRL,
    ]
    return "\n\n\n".join(p.rstrip("\n") for p in parts) + "\n"


_ADAPTER = '''class JudgeReward:
    """A 0..2 judge (score, is_repetition) on the reward's 0..4 scale, as Duet's EvalJudgeReward."""

    def __init__(self, judge: Any) -> None:
        self.judge = judge

    def similarity(self, question: str, gold: str, prediction: str) -> int | None:
        return 2 * int(self.judge.score(question, gold, prediction))

    def repetition(self, previous: str, new: str) -> bool | None:
        return bool(self.judge.is_repetition([previous] if previous else [], new))


def gold_from_json(ground_truth: str | list[dict[str, Any]]) -> list[GoldSpan]:
    items = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    return [GoldSpan(g["content"], g["question"], (float(g["span"][0]), float(g["span"][1]))) for g in items]


def replies_of(completion: Any) -> list[str]:
    """A stream's replies in turn order: a conversation's assistant messages, verl's decoded multi-turn text
    ("…\\\\nuser\\\\n…\\\\nassistant\\\\n…"), or plain text with one reply per line."""
    if isinstance(completion, list):
        out = []
        for m in completion:
            if m.get("role", "assistant") != "assistant":
                continue
            c = m.get("content", "")
            out.append((c if isinstance(c, str) else " ".join(p.get("text", "") for p in c)).strip())
        return out
    text = str(completion)
    if "\\nuser\\n" in text or text.startswith("assistant\\n"):
        return parse_response(text)
    return [line.strip() for line in text.strip().splitlines()]


def score(replies: Sequence[str], ground_truth: Any, turn_times: Sequence[float]) -> float:
    """The reward of one stream: its replies (one per turn, "NO REPLY" for silence) against the gold spans."""
    return pauc_reward(list(turn_times), list(replies), gold_from_json(ground_truth), JUDGE, weights=WEIGHTS,
                       prefix_chars=PREFIX_CHARS).total'''

_VERL = '''def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None,
                  **kwargs: Any) -> float:
    """verl's custom reward function: the decoded rollout, the row's reward_model.ground_truth and extra_info."""
    return score(replies_of(solution_str), ground_truth, (extra_info or {})["turn_times"])'''

_TRL = '''def stream_reward(completions: list[Any], gold_spans: list[str], turn_times: list[list[float]],
                **kwargs: Any) -> list[float]:
    """trl's reward function: one float per completion; gold_spans and turn_times are the dataset's columns."""
    return [score(replies_of(c), g, t) for c, g, t in zip(completions, gold_spans, turn_times, strict=True)]'''


# ---------------------------------------------------------------------------------------------
# the engines' command lines


def verl_command(cfg: TrainConfig, out: Path, model: str, has_val: bool) -> str:
    """verl's GRPO entry point with Duet's recipe: group size, sampling, clip, no KL, no entropy term."""
    g = cfg.grpo
    d = out.resolve()
    opts = [
        "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False",
        f"data.train_files={d / 'train.json'}", f"data.val_files={d / ('val.json' if has_val else 'train.json')}",
        f"data.train_batch_size={g.clips_per_step}", "data.image_key=images",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.actor.optim.lr={g.lr}", f"actor_rollout_ref.actor.optim.weight_decay={g.weight_decay}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={g.clips_per_step}",
        f"actor_rollout_ref.actor.ppo_epochs={g.ppo_epochs}", f"actor_rollout_ref.actor.clip_ratio={g.clip}",
        f"actor_rollout_ref.actor.grad_clip={g.grad_clip}", "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0", "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        f"actor_rollout_ref.rollout.n={g.group}", f"actor_rollout_ref.rollout.temperature={g.temperature}",
        f"actor_rollout_ref.rollout.top_k={g.top_k}", f"data.max_response_length={g.max_new_tokens}",
        f"reward.custom_reward_function.path={d / REWARD_FILE}", "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={g.steps}", f"trainer.save_freq={g.ckpt_every}",
        '"trainer.n_gpus_per_node=${GPUS:-8}"', '"trainer.nnodes=${NODES:-1}"', f"trainer.default_local_dir={d / 'ckpt'}",
    ]
    return ("#!/bin/sh\n# Duet's GRPO recipe on verl, written by `duet train export-config` (docs/scaling.md).\n"
            "# Older verl releases name the reward keys custom_reward_function.path/.name (no 'reward.').\n"
            "# GPUS=8 NODES=1 sh run_verl.sh [more verl overrides]\nset -e\n"
            "python3 -m verl.trainer.main_ppo \\\n    " + " \\\n    ".join(opts) + ' \\\n    "$@"\n')


def trl_script(cfg: TrainConfig, model: str) -> str:
    """A trl GRPOTrainer script with Duet's recipe (run with accelerate or torchrun, one process per GPU)."""
    g = cfg.grpo
    return f'''"""Duet's GRPO recipe on trl, written by `duet train export-config` (docs/scaling.md).

    accelerate launch --num_processes 8 train_trl.py      (or: torchrun --nproc-per-node 8 train_trl.py)
"""
from pathlib import Path

from datasets import load_dataset
from trl import GRPOConfig, GRPOTrainer

from duet_pauc_reward import stream_reward

HERE = Path(__file__).resolve().parent
data = load_dataset("json", data_files=str(HERE / "train.jsonl"), split="train")
args = GRPOConfig(
    output_dir=str(HERE / "ckpt"), seed={cfg.seed}, max_steps={g.steps}, save_steps={g.ckpt_every},
    learning_rate={g.lr}, weight_decay={g.weight_decay}, max_grad_norm={g.grad_clip},
    # one clip's group per process and step; Duet's recipe takes {g.clips_per_step} clips a step over all processes
    num_generations={g.group}, per_device_train_batch_size={g.group}, gradient_accumulation_steps=1,
    temperature={g.temperature}, top_k={g.top_k}, max_completion_length={g.max_new_tokens},
    epsilon={g.clip}, num_iterations={g.ppo_epochs}, beta=0.0, loss_type="grpo",
)
trainer = GRPOTrainer(model={model!r}, reward_funcs=[stream_reward], args=args, train_dataset=data)
trainer.train()
'''
