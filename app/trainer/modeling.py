"""Loading, freezing, adapting and saving the policy (a Qwen2.5-VL checkpoint) for training.

Why a module of its own: SFT, GRPO and export must agree on which parameters train (vision tower
frozen by default, as in MMDuet2's SFT), how LoRA is attached (language model only) and how a
trained model is written back as a plain HF checkpoint that the project's converter reads.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("duet.trainer")

# Files besides the weights that a converted checkpoint needs (tokenizer, processor, template).
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
              "generation_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def pick_device(requested: str) -> tuple[str, str | None]:
    """(device, warning). ``auto`` takes CUDA when present; ``cuda`` without a GPU falls back with a warning."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cpu":
        return "cpu", None
    if has_cuda:
        return "cuda", None
    if requested == "cuda":
        return "cpu", "device = 'cuda' was requested but no CUDA GPU is visible; training on the CPU (slow)"
    return "cpu", "no GPU found: training on the CPU (fine for the tiny model; the 3B needs a GPU)"


def load_policy(hf_dir: Path, *, dtype: str = "float32", device: str = "cpu", freeze_vision: bool = True,
                lora: bool = False, lora_r: int = 16, lora_alpha: int = 32, train_embeddings: bool = True,
                gradient_checkpointing: bool = False) -> Any:
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir, dtype=getattr(torch, dtype))
    model.to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS, bias="none"))
    else:
        for name, p in model.named_parameters():
            if freeze_vision and ".visual." in f".{name}":
                p.requires_grad_(False)
            if not train_embeddings and "embed_tokens" in name:
                p.requires_grad_(False)
    model.train()
    return model


def trainable_state(model: Any) -> dict[str, Any]:
    """The trainable tensors by name (what a checkpoint must hold to resume)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, tensors: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def unwrap(model: Any) -> Any:
    """The plain transformers model, LoRA merged in when present."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def save_hf(model: Any, base_dir: Path, out_dir: Path) -> Path:
    """Write a plain HF checkpoint (safetensors + the base's tokenizer/processor files), atomically."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain = unwrap(model)
    plain.save_pretrained(tmp, safe_serialization=True)
    for f in SIDE_FILES:
        src = Path(base_dir) / f
        if src.exists() and not (tmp / f).exists():
            shutil.copyfile(src, tmp / f)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def base_checkpoint(cfg: Any) -> Path:
    """The HF directory training starts from: the tiny model built from the recipe's spec, or a path."""
    if cfg.model.base == "tiny":
        from app.modelhub.tiny import TinySpec, build_tiny

        t = cfg.model.tiny
        spec = TinySpec(seed=t.seed, hidden=t.hidden, layers=t.layers, heads=t.heads, kv_heads=t.kv_heads,
                        ffn=t.ffn, mrope_section=tuple(t.mrope_section), vision_depth=t.vision_depth,
                        vision_hidden=t.vision_hidden, vision_ffn=t.vision_ffn, vision_heads=t.vision_heads,
                        fullatt_blocks=tuple(t.fullatt_blocks), init_std=t.init_std)
        return build_tiny(spec).hf_dir
    p = Path(cfg.model.base).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"model.base = {cfg.model.base!r}: no config.json there (expected an HF checkpoint "
                                "folder, e.g. a download of wangyueqian/MMDuet2, or \"tiny\")")
    return p
