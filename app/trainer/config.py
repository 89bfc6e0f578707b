"""Training recipes: one TOML file drives a whole job (model, data, SFT, GRPO, export).

Why one file: a job must be re-runnable and resumable from what is on disk alone, so everything
that determines the result (seed included) lives in the recipe, and the recipe is copied next to the
checkpoints. Unknown keys are errors (a typo must not silently fall back to a default).

Layout (every table optional; see ``models/recipes/demo.toml``)::

    out_dir = ".cache/train/demo"
    seed = 0
    device = "auto"           # auto | cpu | cuda
    [model]   base = "tiny" | "<HF dir>";  [model.tiny] TinySpec fields
    [data]    interval, frames_per_turn, tokens_per_frame, nqna_fraction, train/heldout sources
    [sft]     steps, lr, lora, ...
    [grpo]    steps, group, temperature, top_k, weights, ...
    [export]  name, source, quant
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomllib

from app.core.errors import InputError
from app.core.protocol import DEFAULT_FRAMES_PER_TURN, DEFAULT_INTERVAL_S
from app.core.settings import KIND_NAMES, coerce_like

DEFAULT_DEMO_RECIPE = Path(__file__).resolve().parents[2] / "models" / "recipes" / "demo.toml"  # `duet train demo`


class ConfigError(InputError):
    """The recipe is unusable; the message names the file, table and key."""


@dataclass
class SyntheticSource:
    """A synthetic proactive set generated on the fly (``app.eval.synthetic``)."""

    families: list[str] = field(default_factory=lambda: ["appear", "colour", "move", "count", "text"])
    difficulties: list[str] = field(default_factory=lambda: ["easy"])
    per_family: int = 8
    seed: int = 0
    size: int = 112


@dataclass
class DataConfig:
    # Stream geometry: must equal what inference uses (the eval runner's RunSettings / SessionConfig).
    interval: float = DEFAULT_INTERVAL_S
    frames_per_turn: int = DEFAULT_FRAMES_PER_TURN
    tokens_per_frame: int = 16  # the demo's (a tiny model, small frames); MMDuet2 recipes set 128
    nqna_fraction: float = 0.5  # share of dialogues whose question is re-timed to a random turn (nQnA form)
    variants: int = 1  # dialogues built per training video (different nQnA question times)
    train_synthetic: SyntheticSource | None = field(default_factory=SyntheticSource)
    heldout_synthetic: SyntheticSource | None = field(
        default_factory=lambda: SyntheticSource(per_family=2, seed=1000))
    train_files: list[str] = field(default_factory=list)  # dataset files (.jsonl Duet / .json PVQA)
    sessions: list[str] = field(default_factory=list)  # saved session folders with feedback (app/core/feedback.py)
    sessions_repeat: int = 1  # each session dialogue appears this many times per epoch (oversampling vs replay)
    window_turns: int = 32  # long sessions are cut into windows of this many turns (one forward each)
    sessions_digest: str = ""  # hash of the sessions' marks: a changed mark invalidates checkpoints
    sessions_weight: float = 1.0  # loss weight of the tokens of the turns a mark changed or kept (vs replay's 1)
    heldout_files: list[str] = field(default_factory=list)


@dataclass
class TinyConfig:
    """TinySpec fields for ``base = "tiny"`` (see app/modelhub/tiny.py)."""

    seed: int = 0
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 512
    mrope_section: list[int] = field(default_factory=lambda: [4, 6, 6])
    vision_depth: int = 4
    vision_hidden: int = 128
    vision_ffn: int = 256
    vision_heads: int = 4
    fullatt_blocks: list[int] = field(default_factory=lambda: [1, 3])
    init_std: float = 0.02


@dataclass
class ModelConfig:
    base: str = "tiny"
    tiny: TinyConfig = field(default_factory=TinyConfig)
    dtype: str = "float32"  # float32 on CPU; bfloat16 on a GPU for the 3B


@dataclass
class SFTConfig:
    steps: int = 300
    batch: int = 4  # dialogues per optimizer step (gradient accumulation, one dialogue per forward)
    lr: float = 2e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    freeze_vision: bool = True
    train_embeddings: bool = True
    gradient_checkpointing: bool = False
    # --gpus N: shard a full fine-tune with FSDP2 (auto = yes for a full fine-tune, not LoRA), or DDP replicas (off)
    fsdp: str = "auto"
    ckpt_every: int = 50
    eval_every: int = 0  # 0 = only before and after
    eval_limit: int = 0  # held-out examples used for in-training PAUC (0 = all)


@dataclass
class GRPOConfig:
    steps: int = 20
    clips_per_step: int = 4
    group: int = 4  # rollouts per clip (paper: 4)
    temperature: float = 1.2  # paper §2.6
    top_k: int = 10
    max_new_tokens: int = 24  # paper: 100; the synthetic answers are ≤ 12 tokens
    lr: float = 1e-4  # paper: 1e-6 for the 3B; the tiny model needs a larger step
    clip: float = 0.2
    ppo_epochs: int = 1
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    freeze_vision: bool = True
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    judge: str = "exact"  # exact | overlap | llm
    judge_url: str = ""
    judge_model: str = ""
    w_pauc: float = 3.0
    w_rep: float = 2.0
    w_in_span: float = 0.5
    w_pfx: float = 2.0
    prefix_chars: int = 50
    ckpt_every: int = 5
    eval_every: int = 0
    eval_limit: int = 0


@dataclass
class ExportConfig:
    name: str = "my-finetune"
    source: str = "trained"
    quant: str = "Q8_0"  # "" or "F32" = keep the float GGUF
    outtype: str = "f32"
    stage: str = "grpo"  # which stage's final weights to export: grpo | sft


@dataclass
class TrainConfig:
    out_dir: str = ".cache/train/run"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    path: str = ""  # where the recipe was read from (not a TOML key)

    @property
    def out(self) -> Path:
        p = Path(self.out_dir)
        if not p.is_absolute() and self.path:
            # Relative to the repository/working directory, not to the recipe: recipes live in models/recipes.
            p = Path.cwd() / p
        return p


_OPTIONAL = {"train_synthetic", "heldout_synthetic"}


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known or key == "path":
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(k for k in known if k != 'path'))})")
        f = known[key]
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if key in _OPTIONAL:
            kwargs[key] = None if value in (False, "none") else _build(SyntheticSource, value, f"{where}.{key}")
        elif is_dataclass(default):
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, (bool, int, float, str, list)):
        out = coerce_like(value, default)
        if out is None:
            raise ConfigError(f"{where}: expected {KIND_NAMES[type(default)]}, got {value!r}")
        return out
    return value


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a recipe; ``overrides`` are dotted keys (``{"sft.steps": 10}``) applied on top."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    cfg = _build(TrainConfig, raw, str(p))
    cfg.path = str(p)
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """Cross-field rules that would otherwise fail deep inside a run."""
    d = cfg.data
    if d.interval <= 0:
        raise ConfigError(f"{cfg.path}: data.interval must be > 0")
    if d.frames_per_turn not in (1, 2):
        raise ConfigError(f"{cfg.path}: data.frames_per_turn must be 1 or 2 (MMDuet2 uses 2)")
    if not 4 <= d.tokens_per_frame <= 1024:
        raise ConfigError(f"{cfg.path}: data.tokens_per_frame must be within 4–1024")
    if not 0.0 <= d.nqna_fraction <= 1.0:
        raise ConfigError(f"{cfg.path}: data.nqna_fraction must be within [0, 1]")
    if cfg.grpo.group < 2:
        raise ConfigError(f"{cfg.path}: grpo.group must be >= 2 (advantages are normalised within a group)")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{cfg.path}: device must be auto, cpu or cuda")
    if cfg.sft.fsdp not in ("auto", "on", "off"):
        raise ConfigError(f"{cfg.path}: sft.fsdp = {cfg.sft.fsdp!r}: it must be auto, on or off")
    if cfg.sft.fsdp == "on" and cfg.sft.lora:
        raise ConfigError(f"{cfg.path}: sft.fsdp = \"on\" shards a full fine-tune; LoRA trains through DDP "
                          "(set sft.fsdp = \"auto\" or \"off\", or sft.lora = false)")
    if cfg.grpo.judge not in ("exact", "overlap", "llm"):
        raise ConfigError(f"{cfg.path}: grpo.judge must be exact, overlap or llm")
    for key, value, lo, hi in _RANGES(cfg):
        if value != value or not lo <= value <= hi:  # value != value: NaN
            span = f"≥ {_num(lo)}" if hi == float("inf") else f"within {_num(lo)}–{_num(hi)}"
            raise ConfigError(f"{cfg.path}: {key} = {value!r} is out of range; it must be {span}")


def _RANGES(cfg: TrainConfig) -> list[tuple[str, float, float, float]]:  # noqa: N802 - a table, read as one
    """(key, value, lowest, highest) for every number a run divides by, loops over or steps with."""
    inf = float("inf")
    s, g, d = cfg.sft, cfg.grpo, cfg.data
    rows = [("seed", cfg.seed, 0, 2**32 - 1), ("threads", cfg.threads, 0, 4096),
            ("data.variants", d.variants, 1, 1000), ("data.sessions_weight", d.sessions_weight, 0.0, 1000.0)]
    for src_key in ("train_synthetic", "heldout_synthetic"):
        src = getattr(d, src_key)
        if src is not None:
            rows += [(f"data.{src_key}.per_family", src.per_family, 1, 100_000),
                     (f"data.{src_key}.size", src.size, 28, 4096)]
    for stage, c in (("sft", s), ("grpo", g)):
        rows += [(f"{stage}.steps", c.steps, 1, 10_000_000), (f"{stage}.lr", c.lr, 1e-12, 10.0),
                 (f"{stage}.ckpt_every", c.ckpt_every, 1, inf), (f"{stage}.eval_every", c.eval_every, 0, inf),
                 (f"{stage}.eval_limit", c.eval_limit, 0, inf), (f"{stage}.grad_clip", c.grad_clip, 0.0, inf),
                 (f"{stage}.weight_decay", c.weight_decay, 0.0, 1.0), (f"{stage}.lora_r", c.lora_r, 1, 4096),
                 (f"{stage}.lora_alpha", c.lora_alpha, 1, 65536)]
    rows += [("sft.batch", s.batch, 1, 4096), ("sft.warmup", s.warmup, 0, inf),
             ("sft.min_lr_ratio", s.min_lr_ratio, 0.0, 1.0), ("grpo.clips_per_step", g.clips_per_step, 1, 4096),
             ("grpo.group", g.group, 2, 256), ("grpo.temperature", g.temperature, 1e-3, 100.0),
             ("grpo.top_k", g.top_k, 0, 1_000_000), ("grpo.max_new_tokens", g.max_new_tokens, 1, 8192),
             ("grpo.clip", g.clip, 1e-6, 10.0), ("grpo.ppo_epochs", g.ppo_epochs, 1, 100),
             ("grpo.prefix_chars", g.prefix_chars, 0, 100_000)]
    rows += [(f"grpo.{w}", getattr(g, w), 0.0, 1000.0) for w in ("w_pauc", "w_rep", "w_in_span", "w_pfx")]
    return rows


def _num(v: float) -> str:
    return f"{int(v):,}".replace(",", "_") if float(v).is_integer() else f"{v:g}"
