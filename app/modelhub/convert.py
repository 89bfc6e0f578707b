"""Hugging Face Qwen2.5-VL (MMDuet2) → GGUF: the text model and its ``mmproj`` vision projector.

Written on the ``gguf`` package (its writer, constants and tensor-name maps) so that it needs no
torch and no copy of llama.cpp's converter, which also rejects freshly trained tokenizers whose
pre-tokenizer hash it does not know. What llama.cpp needs and why is in docs/llamacpp.md.

The conversion is planned first (:func:`plan_tensors`: every HF tensor → GGUF name, shape, transform)
and executed second; the plan alone is what the "real 3B converts" test checks on a meta-device model.
Outputs are written under a temporary name and renamed, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from app.core.atomic import install_pair
from app.core.bounded import read_regular_text
from app.modelhub import vision_pad
from app.modelhub.errors import ConversionError
from app.modelhub.gguf_write import PendingTensor, write_gguf
from app.modelhub.leftovers import remove_stale_partials
from app.modelhub.safetensors_index import CheckpointError, SafetensorsCheckpoint
from app.modelhub.vocab import load_vocab

SUPPORTED_ARCH = "Qwen2_5_VLForConditionalGeneration"
OUTTYPES = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16}
CONFIG_MAX_BYTES = 16 * 2**20  # config.json / preprocessor_config.json are a few KB

# What a config.json may say, checked before anything is allocated or iterated: the converter loops
# over vocab_size tokens and num_hidden_layers blocks, so `vocab_size: 1e12` or a billion layers ran
# for ever. Each bound is far beyond any real checkpoint (Qwen2.5-VL-72B: vocab 152,064, 80 layers,
# hidden 8,192; the largest open vocabularies are ~256 k), so only nonsense is refused.
LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 20), "hidden_size": (1, 1 << 16), "intermediate_size": (1, 1 << 18),
    "num_hidden_layers": (1, 1024), "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024),
    "max_position_embeddings": (1, 1 << 24), "vision_config.depth": (1, 1024),
    "vision_config.hidden_size": (1, 1 << 16), "vision_config.intermediate_size": (1, 1 << 18),
    "vision_config.num_heads": (1, 1024), "vision_config.out_hidden_size": (1, 1 << 16),
    "vision_config.patch_size": (1, 1024), "vision_config.spatial_merge_size": (1, 64),
    "vision_config.temporal_patch_size": (1, 64), "vision_config.window_size": (1, 1 << 16),
}


# ---------------------------------------------------------------------------------------------
# Configuration: transformers 4.x writes text settings at the top level with ``rope_scaling``;
# 5.x nests them in ``text_config`` with ``rope_parameters``. Read both.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QwenVLConfig:
    vocab_size: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    rms_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    max_positions: int
    tied: bool
    v_depth: int
    v_hidden: int
    v_ffn: int
    v_heads: int
    v_out: int
    v_patch: int
    v_merge: int
    v_temporal: int
    v_window: int
    v_fullatt: tuple[int, ...]

    @classmethod
    def from_dict(cls, cfg: dict, where: str = "config.json") -> QwenVLConfig:
        archs = cfg.get("architectures") or []
        if SUPPORTED_ARCH not in archs and cfg.get("model_type") != "qwen2_5_vl":
            got = ", ".join(archs) or cfg.get("model_type", "unknown")
            raise ConversionError(
                f"{where}: this is a {got} checkpoint; Duet converts {SUPPORTED_ARCH} (MMDuet2 / Qwen2.5-VL) only")
        text = {**cfg, **(cfg.get("text_config") or {})}
        rope = text.get("rope_parameters") or text.get("rope_scaling") or cfg.get("rope_scaling") or {}
        v = cfg.get("vision_config")
        if not v:
            raise ConversionError(f"{where}: no vision_config; not a vision-language checkpoint")
        try:
            section = tuple(rope.get("mrope_section") or ())
            if not section:
                raise KeyError("mrope_section")
            return cls(
                vocab_size=int(text["vocab_size"]), hidden=int(text["hidden_size"]),
                ffn=int(text["intermediate_size"]), layers=int(text["num_hidden_layers"]),
                heads=int(text["num_attention_heads"]), kv_heads=int(text["num_key_value_heads"]),
                rms_eps=float(text.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta", text.get("rope_theta", 1e6))),
                mrope_section=section, max_positions=int(text.get("max_position_embeddings", 32768)),
                tied=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
                v_depth=int(v["depth"]), v_hidden=int(v["hidden_size"]), v_ffn=int(v["intermediate_size"]),
                v_heads=int(v["num_heads"]), v_out=int(v.get("out_hidden_size", text["hidden_size"])),
                v_patch=int(v.get("patch_size", 14)), v_merge=int(v.get("spatial_merge_size", 2)),
                v_temporal=int(v.get("temporal_patch_size", 2)), v_window=int(v.get("window_size", 112)),
                v_fullatt=tuple(v.get("fullatt_block_indexes") or ()),
            )
        except KeyError as e:
            raise ConversionError(f"{where}: missing required setting {e}") from e
        except (TypeError, ValueError, OverflowError) as e:  # "abc", a list, null, NaN where a number belongs
            raise ConversionError(f"{where}: a setting is not a number of the right kind ({e}); the file is "
                                  "damaged or not a Qwen2.5-VL config") from None

    def check_limits(self, where: str) -> None:
        """Every count within :data:`LIMITS` and every float finite: before anything loops over them."""
        values = {"vocab_size": self.vocab_size, "hidden_size": self.hidden, "intermediate_size": self.ffn,
                  "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                  "num_key_value_heads": self.kv_heads, "max_position_embeddings": self.max_positions,
                  "vision_config.depth": self.v_depth, "vision_config.hidden_size": self.v_hidden,
                  "vision_config.intermediate_size": self.v_ffn, "vision_config.num_heads": self.v_heads,
                  "vision_config.out_hidden_size": self.v_out, "vision_config.patch_size": self.v_patch,
                  "vision_config.spatial_merge_size": self.v_merge,
                  "vision_config.temporal_patch_size": self.v_temporal, "vision_config.window_size": self.v_window}
        for key, value in values.items():
            lo, hi = LIMITS[key]
            if not lo <= value <= hi:
                raise ConversionError(f"{where}: {key} = {value:,} is out of range; a Qwen2.5-VL checkpoint has "
                                      f"{lo:,} to {hi:,}. The file is damaged or not this model's; nothing was "
                                      "converted.")
        for key, x in (("rms_norm_eps", self.rms_eps), ("rope_theta", self.rope_theta)):
            if not (x > 0 and x < float("inf")):
                raise ConversionError(f"{where}: {key} = {x} must be a finite number > 0")
        for key, parts, hi in (("mrope_section", self.mrope_section, self.hidden),
                               ("vision_config.fullatt_block_indexes", self.v_fullatt, self.v_depth - 1)):
            if len(parts) > 1024 or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi
                                        for v in parts):
                raise ConversionError(f"{where}: {key} must list whole numbers from 0 to {hi:,}")

    def check(self, where: str) -> None:
        """Constraints llama.cpp / clip.cpp rely on without checking them itself (the limits first)."""
        self.check_limits(where)
        head_dim = self.hidden // self.heads
        if sum(self.mrope_section) * 2 != head_dim:
            raise ConversionError(f"{where}: mrope_section {list(self.mrope_section)} must sum to head_dim/2 = {head_dim // 2}")
        if len(self.mrope_section) > 4:
            raise ConversionError(f"{where}: mrope_section has more than 4 parts")
        if not self.v_fullatt:
            raise ConversionError(f"{where}: vision_config.fullatt_block_indexes is required for Qwen2.5-VL")
        step = self.v_fullatt[0] + 1
        if any(b - a != step for a, b in zip(self.v_fullatt, self.v_fullatt[1:])):
            raise ConversionError(f"{where}: fullatt_block_indexes {list(self.v_fullatt)} are not evenly spaced")
        if self.v_temporal != 2:
            raise ConversionError(f"{where}: temporal_patch_size {self.v_temporal} unsupported (llama.cpp needs 2)")
        if self.v_ffn == self.v_hidden:
            raise ConversionError(
                f"{where}: vision intermediate_size equals hidden_size ({self.v_hidden}); clip.cpp would misread "
                "the MLP orientation")
        if self.v_out != self.hidden:
            raise ConversionError(f"{where}: vision out_hidden_size {self.v_out} ≠ text hidden_size {self.hidden}")

    @property
    def n_wa_pattern(self) -> int:
        return self.v_fullatt[0] + 1

    @property
    def v_ffn_padded(self) -> int:
        """The vision MLP's hidden width as written (see :mod:`app.modelhub.vision_pad`)."""
        return vision_pad.padded(self.v_ffn)


def load_config(hf_dir: Path) -> QwenVLConfig:
    path = hf_dir / "config.json"
    if not path.exists():
        raise ConversionError(f"{path}: missing; is {hf_dir} a Hugging Face model folder?")
    try:
        raw = json.loads(read_regular_text(path, CONFIG_MAX_BYTES))  # a FIFO or /dev/zero: refused, not read
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: not a model configuration (a JSON object)")
    cfg = QwenVLConfig.from_dict(raw, str(path))
    cfg.check(str(path))
    return cfg


# ---------------------------------------------------------------------------------------------
# The tensor plan
# ---------------------------------------------------------------------------------------------
Transform = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class TensorPlan:
    gguf_name: str
    sources: tuple[str, ...]  # HF tensor names read
    shape: tuple[int, ...]  # numpy shape written (GGUF's ne is the reverse)
    transform: Transform
    vision: bool

    @property
    def ne(self) -> tuple[int, ...]:
        """The shape as llama.cpp states it (fastest-varying first)."""
        return tuple(reversed(self.shape))


def canonical_name(name: str) -> str:
    """transformers 5 keeps ``model.language_model.*`` / ``model.visual.*`` in memory; 4.x saved the classic names."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("model.visual."):
        return name[len("model."):]
    return name


def _take(i: int) -> Transform:
    return lambda xs: xs[0]


def _slice(axis: int, part: int, parts: int) -> Transform:
    def f(xs: list[np.ndarray]) -> np.ndarray:
        n = xs[0].shape[axis] // parts
        return np.take(xs[0], np.arange(part * n, (part + 1) * n), axis=axis)
    return f


def plan_tensors(cfg: QwenVLConfig, shapes: dict[str, tuple[int, ...]]) -> list[TensorPlan]:
    """Map every HF tensor to its GGUF name and shape; raise on anything left unmapped."""
    text_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2VL, cfg.layers)
    vis_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, cfg.v_depth)
    plans: list[TensorPlan] = []
    unmapped: list[str] = []
    names = {canonical_name(n): n for n in shapes}
    for name, orig in sorted(names.items()):
        shape = tuple(shapes[orig])
        if name == "lm_head.weight" and cfg.tied:
            continue  # llama.cpp uses token_embd when `output` is absent
        if name.startswith("visual."):
            if name == "visual.patch_embed.proj.weight":  # Conv3D [out, in, t=2, kh, kw] → two Conv2D kernels
                base = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH] + ".weight"
                s2 = (shape[0], shape[1], shape[3], shape[4])
                plans.append(TensorPlan(base, (orig,), s2, lambda xs: xs[0][:, :, 0], True))
                plans.append(TensorPlan(base + ".1", (orig,), s2, lambda xs: xs[0][:, :, 1], True))
                continue
            if ".attn.qkv." in name:  # fused [3·d, …] → q, k, v
                for part, letter in enumerate("qkv"):
                    split = name.replace(".qkv.", f".{letter}.")
                    mapped = vis_map.get_name(split, try_suffixes=(".weight", ".bias"))
                    if mapped is None:
                        unmapped.append(name)
                        break
                    s = (shape[0] // 3, *shape[1:])
                    plans.append(TensorPlan(mapped, (orig,), s, _slice(0, part, 3), True))
                continue
            mapped = vis_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                unmapped.append(name)
                continue
            axis = vision_pad.mlp_axis(name)
            if axis is not None and shape[axis] == cfg.v_ffn and cfg.v_ffn_padded != cfg.v_ffn:
                padded = tuple(cfg.v_ffn_padded if i == axis else n for i, n in enumerate(shape))
                plans.append(TensorPlan(mapped, (orig,), padded, vision_pad.pad_transform(axis, cfg.v_ffn_padded), True))
                continue
            plans.append(TensorPlan(mapped, (orig,), shape, _take(0), True))
        else:
            mapped = text_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                unmapped.append(name)
                continue
            plans.append(TensorPlan(mapped, (orig,), shape, _take(0), False))
    if unmapped:
        raise ConversionError(f"{len(unmapped)} tensor(s) have no GGUF name: {', '.join(unmapped[:8])}")
    return plans


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionResult:
    model: Path
    mmproj: Path
    seconds: float
    n_tensors: int


def _out_type(plan: TensorPlan, outtype: str) -> gguf.GGMLQuantizationType:
    if outtype == "f32" or len(plan.shape) == 1:
        return gguf.GGMLQuantizationType.F32  # norms and biases stay F32, as llama.cpp expects
    if plan.vision and plan.gguf_name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH]):
        # ggml's conv path (im2col) has no BF16: F16 for an F16 file, else F32 (llama.cpp's converter does the same)
        return gguf.GGMLQuantizationType.F16 if outtype == "f16" else gguf.GGMLQuantizationType.F32
    return OUTTYPES[outtype]


def _encode(arr: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return arr
    if qtype == gguf.GGMLQuantizationType.F16:
        return arr.astype(np.float16)
    return gguf.quants.quantize(arr, qtype)


def convert(hf_dir: Path | str, out_dir: Path | str, outtype: str = "f16", name: str | None = None,
            overwrite: bool = False, checkpoint: SafetensorsCheckpoint | None = None,
            mmproj_outtype: str | None = None) -> ConversionResult:
    """Convert a Qwen2.5-VL checkpoint folder into ``{name}-{outtype}.gguf`` + ``mmproj-{name}-{mmproj_outtype}.gguf``.

    ``mmproj_outtype`` (default: ``outtype``) lets the projector differ from the text model: a BF16 projector
    beside an F16 text model to be quantized is what a CPU that multiplies BF16 natively runs fastest
    (docs/benchmarks.md §1).

    ``checkpoint`` replaces the folder's safetensors with any object of the same interface
    (``tensors`` with shapes, ``load``, ``close``): the benchmarks use it to write a model of the real
    3B shape with random weights without ever materialising 15 GB of safetensors.
    """
    t0 = time.perf_counter()
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    mmproj_outtype = mmproj_outtype or outtype
    for t in (outtype, mmproj_outtype):
        if t not in OUTTYPES:
            raise ConversionError(f"--outtype {t!r}: choose one of {', '.join(OUTTYPES)}")
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: not a folder")
    cfg = load_config(hf_dir)
    vocab = load_vocab(hf_dir, cfg.vocab_size)
    try:
        ckpt = checkpoint or SafetensorsCheckpoint(hf_dir)
    except CheckpointError as e:
        raise ConversionError(str(e)) from e
    plans = plan_tensors(cfg, {n: t.shape for n, t in ckpt.tensors.items()})
    missing = [p for p in ("model.embed_tokens.weight", "model.norm.weight")
               if p not in {canonical_name(n) for n in ckpt.tensors}]
    if missing:
        raise ConversionError(f"{hf_dir}: weights lack {', '.join(missing)}; the checkpoint is incomplete")
    name = name or hf_dir.resolve().name.lower()
    model_path = out_dir / f"{name}-{outtype}.gguf"
    mmproj_path = out_dir / f"mmproj-{name}-{mmproj_outtype}.gguf"
    for p in (model_path, mmproj_path):
        if p.exists() and not overwrite:
            raise ConversionError(f"{p}: already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"--out {out_dir}: exists and is not a folder; give a folder to write the pair into")
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in (model_path, mmproj_path):  # a killed conversion's temporaries (.NAME.partial-PID): not left for ever
        remove_stale_partials(p)
    pre = {}
    pre_path = hf_dir / "preprocessor_config.json"
    if pre_path.exists():
        try:
            pre = json.loads(read_regular_text(pre_path, CONFIG_MAX_BYTES))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConversionError(f"{pre_path}: not valid JSON ({e})") from e

    def made(p: TensorPlan, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
        data = p.transform([ckpt.load(s) for s in p.sources])
        if tuple(data.shape) != p.shape:
            raise ConversionError(f"{p.gguf_name}: produced shape {data.shape}, planned {p.shape}")
        return _encode(data, qtype)

    def tensors(vision: bool) -> list[PendingTensor]:  # read and converted one at a time, as each is written
        out = []
        for p in plans:
            if p.vision == vision:
                qtype = _out_type(p, mmproj_outtype if vision else outtype)
                out.append(PendingTensor.planned(p.gguf_name, p.shape, qtype, functools.partial(made, p, qtype)))
        return out

    def text_kv(w: gguf.GGUFWriter) -> None:
        w.add_name(name)
        w.add_file_type(FILE_TYPES[outtype])
        w.add_context_length(cfg.max_positions)
        w.add_embedding_length(cfg.hidden)
        w.add_block_count(cfg.layers)
        w.add_feed_forward_length(cfg.ffn)
        w.add_head_count(cfg.heads)
        w.add_head_count_kv(cfg.kv_heads)
        w.add_layer_norm_rms_eps(cfg.rms_eps)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_rope_dimension_sections(list(cfg.mrope_section) + [0] * (4 - len(cfg.mrope_section)))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(vocab.tokens)
        w.add_token_types(vocab.types)
        w.add_token_merges(vocab.merges)
        w.add_bos_token_id(vocab.ids["<|endoftext|>"])
        w.add_eos_token_id(vocab.ids["<|im_end|>"])
        w.add_pad_token_id(vocab.ids["<|endoftext|>"])
        w.add_add_bos_token(False)
        if vocab.chat_template:
            w.add_chat_template(vocab.chat_template)

    def vision_kv(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_name(name)
        w.add_file_type(FILE_TYPES[mmproj_outtype])
        w.add_clip_has_vision_encoder(True)
        w.add_clip_projector_type(gguf.VisionProjectorType.QWEN25VL)
        w.add_vision_projection_dim(cfg.hidden)
        w.add_vision_image_size(560)
        w.add_vision_patch_size(cfg.v_patch)
        w.add_vision_embedding_length(cfg.v_hidden)
        w.add_vision_feed_forward_length(cfg.v_ffn_padded)
        w.add_vision_block_count(cfg.v_depth)
        w.add_vision_head_count(cfg.v_heads)
        w.add_vision_image_mean(pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073]))
        w.add_vision_image_std(pre.get("image_std", [0.26862954, 0.26130258, 0.27577711]))
        w.add_vision_use_silu(True)
        w.add_vision_n_wa_pattern(cfg.n_wa_pattern)
        w.add_vision_attention_layernorm_eps(1e-6)
        w.add_vision_spatial_merge_size(cfg.v_merge)

    staged: list[tuple[Path, Path]] = []
    try:  # both files are written in full before either replaces anything: a pair or nothing
        staged.append((write_gguf(model_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2VL], text_kv, tensors(False)),
                       model_path))
        staged.append((write_gguf(mmproj_path, "clip", vision_kv, tensors(True)), mmproj_path))
        install_pair(staged)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        ckpt.close()
    return ConversionResult(model_path, mmproj_path, time.perf_counter() - t0, len(plans))
