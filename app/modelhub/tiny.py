"""The tiny same-architecture model: a random ``Qwen2_5_VLForConditionalGeneration`` of ~0.5 M parameters.

Tests, benchmarks and the offline demo need a real Qwen2.5-VL that runs through the real converter
and the real llama.cpp code paths, without downloading anything. This builds one deterministically
from a seed in a few seconds on CPU: a byte-level BPE tokenizer with Qwen's split regex and its 22
added tokens (so llama.cpp's ``qwen2`` pre-tokenizer matches it byte for byte), random weights,
processor files, then converts it to GGUF with :mod:`app.modelhub.convert` and caches the result.

Shape rules learned the hard way (docs/llamacpp.md): every dimension a multiple of 32,
vision intermediate ≠ vision hidden (clip.cpp guesses ffn orientation from shapes), vision head dim
divisible by 4, ``mrope_section`` summing to head_dim/2, and weights re-randomised with a larger std
so the logits are not all equal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.protocol import CHAT_TEMPLATE, QWEN_ADDED_TOKENS, QWEN_NON_SPECIAL, SYSTEM_PROMPT

QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]  # CLIP statistics, as Qwen2.5-VL uses
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines a tiny model; its hash names the cache entry."""

    seed: int = 0
    bpe_vocab: int = 640  # byte-level BPE size before the 22 added tokens
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 256
    mrope_section: tuple[int, ...] = (2, 3, 3)
    vision_depth: int = 4
    vision_hidden: int = 64
    vision_ffn: int = 128
    vision_heads: int = 4
    fullatt_blocks: tuple[int, ...] = (1, 3)
    init_std: float = 0.1
    max_positions: int = 32768

    def key(self) -> str:
        d = asdict(self)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _corpus() -> list[str]:
    """Text the tokenizer learns merges from: the protocol, and the words proactive answers use."""
    colours = "red green blue yellow orange purple white black grey gray cyan magenta pink brown".split()
    shapes = "circle square triangle star rectangle ball box car person people dog tree line text".split()
    verbs = ("appeared appears moved moves moving changed changes turned turns walking walks stopped left right "
             "up down entered leaves disappeared counting count is are was were there now the a an of to in on "
             "at and it its this that what where how many which when who colour color shape screen frame video")
    numbers = "zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 10".split()
    lines = [SYSTEM_PROMPT, "NO REPLY", "I must reply.", "What is happening?", "What do you see?"]
    for c in colours:
        for s in shapes:
            lines.append(f"A {c} {s} appeared. The {s} is {c}. {c.capitalize()} {s}.")
    lines.append(verbs)
    lines.append(" ".join(numbers))
    lines += [f"There are {n} shapes on the screen." for n in numbers]
    return lines * 4


def build_tokenizer(vocab_size: int):
    """A Qwen2-style byte-level BPE (``tokenizers``), added tokens in Qwen's order after the BPE ids."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tok = Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=t not in QWEN_NON_SPECIAL, normalized=False)
                    for t in QWEN_ADDED_TOKENS])
    return tok


def _write_hf_checkpoint(spec: TinySpec, out: Path) -> None:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = build_tokenizer(spec.bpe_vocab)
    ids = {t: tok.token_to_id(t) for t in QWEN_ADDED_TOKENS}
    n_vocab = tok.get_vocab_size(with_added_tokens=True)
    padded_vocab = (n_vocab + 63) // 64 * 64  # Qwen pads its embedding too; pads become UNUSED tokens
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        model_max_length=spec.max_positions, chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out)

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=padded_vocab, hidden_size=spec.hidden, intermediate_size=spec.ffn,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
            max_position_embeddings=spec.max_positions, rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(spec.mrope_section)},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=spec.vision_depth, hidden_size=spec.vision_hidden, intermediate_size=spec.vision_ffn,
            num_heads=spec.vision_heads, out_hidden_size=spec.hidden, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=112, fullatt_block_indexes=list(spec.fullatt_blocks),
            hidden_act="silu", in_channels=3,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).float().eval()
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(spec.init_std * torch.randn(p.shape, generator=gen))
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    write_processor_files(out, max_pixels=128 * 28 * 28)


def write_processor_files(out: Path, max_pixels: int, min_pixels: int = 4 * 28 * 28) -> None:
    """``preprocessor_config.json`` for Qwen2.5-VL, written by hand.

    transformers' full ``AutoProcessor`` needs torchvision, which has no CPU wheel matching the
    pinned torch here; the PIL image processor reads exactly these keys.
    """
    cfg = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD,
        "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


@dataclass(frozen=True)
class TinyModel:
    hf_dir: Path
    model: Path  # text GGUF (F32)
    mmproj: Path


def default_cache_dir() -> Path:
    env = os.environ.get("DUET_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("duet")) / "tiny"


def build_tiny(spec: TinySpec | None = None, cache_dir: Path | None = None, *, force: bool = False) -> TinyModel:
    """Build (or reuse from the cache) the tiny HF checkpoint and its F32 GGUF pair.

    The entry is keyed by the spec's hash *and* by the hash of the code that makes it (this module,
    the converter and what they import: :func:`app.core.codekey.code_key`), so a changed converter
    rebuilds the model instead of handing out files made by older code (older entries are left in
    place: another checkout sharing the cache may still use them; each is a few MB). It is written
    under a temporary name, then renamed, so a killed build never leaves a half-made model that a
    later run would trust.
    """
    from app.core.codekey import code_key

    spec = spec or TinySpec()
    root = (cache_dir or default_cache_dir()) / f"qwen25vl-tiny-{spec.key()}-{code_key('app.modelhub.tiny')}"
    return build_cached(root, lambda hf: _write_hf_checkpoint(spec, hf), force=force)


def build_cached(root: Path, write_hf: Callable[[Path], None], *, force: bool = False) -> TinyModel:
    """The tiny model pair at ``root``: reused when both files are there, else ``write_hf(folder)`` writes the
    HF checkpoint, the converter makes the F32 GGUF pair, and the whole folder lands at ``root`` with one rename."""
    from app.modelhub.convert import convert

    result = TinyModel(root / "hf", root / "tiny-f32.gguf", root / "mmproj-tiny-f32.gguf")
    if root.exists() and not force and result.model.exists() and result.mmproj.exists():
        return result
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    try:
        write_hf(tmp / "hf")
        convert(tmp / "hf", tmp, outtype="f32", name="tiny")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
