"""The real Qwen2.5-VL-3B (MMDuet2's base) maps completely: built on PyTorch's meta device, no weights."""

from __future__ import annotations

import torch

from app.modelhub.convert import QwenVLConfig, plan_tensors

# Facts of Qwen/Qwen2.5-VL-3B-Instruct's config.json (the checkpoint MMDuet2 fine-tunes).
REAL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True, "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                      "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14,
                      "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2},
}


def expected_ne(cfg: QwenVLConfig) -> dict[str, tuple[int, ...]]:
    """Tensor shapes as llama.cpp's loaders create them (ne order: fastest-varying first).

    Text: src/llama-model.cpp, LLM_ARCH_QWEN2VL. Vision: tools/mtmd/clip.cpp, PROJECTOR_TYPE_QWEN25VL.
    """
    e, ff, v = cfg.hidden, cfg.ffn, cfg.vocab_size
    hd = e // cfg.heads
    kv = hd * cfg.kv_heads
    out = {"token_embd.weight": (e, v), "output_norm.weight": (e,)}
    for i in range(cfg.layers):
        b = f"blk.{i}."
        out |= {b + "attn_norm.weight": (e,), b + "ffn_norm.weight": (e,),
                b + "attn_q.weight": (e, e), b + "attn_q.bias": (e,),
                b + "attn_k.weight": (e, kv), b + "attn_k.bias": (kv,),
                b + "attn_v.weight": (e, kv), b + "attn_v.bias": (kv,),
                b + "attn_output.weight": (e, e),
                b + "ffn_gate.weight": (e, ff), b + "ffn_up.weight": (e, ff), b + "ffn_down.weight": (ff, e)}
    ve, vf, p = cfg.v_hidden, cfg.v_ffn_padded, cfg.v_patch  # the vision MLP is zero-padded (convert.py)
    merged = ve * cfg.v_merge ** 2
    out |= {"v.patch_embd.weight": (p, p, 3, ve), "v.patch_embd.weight.1": (p, p, 3, ve),
            "v.post_ln.weight": (ve,), "mm.0.weight": (merged, merged), "mm.0.bias": (merged,),
            "mm.2.weight": (merged, e), "mm.2.bias": (e,)}
    for i in range(cfg.v_depth):
        b = f"v.blk.{i}."
        for x in "qkv":
            out |= {b + f"attn_{x}.weight": (ve, ve), b + f"attn_{x}.bias": (ve,)}
        out |= {b + "attn_out.weight": (ve, ve), b + "attn_out.bias": (ve,),
                b + "ln1.weight": (ve,), b + "ln2.weight": (ve,),
                b + "ffn_gate.weight": (ve, vf), b + "ffn_gate.bias": (vf,),
                b + "ffn_up.weight": (ve, vf), b + "ffn_up.bias": (vf,),
                b + "ffn_down.weight": (vf, ve), b + "ffn_down.bias": (ve,)}
    return out


def test_real_3b_every_tensor_maps_with_llama_cpp_shapes():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    hf_cfg = Qwen2_5_VLConfig(**REAL_3B)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(hf_cfg)
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    cfg = QwenVLConfig.from_dict(REAL_3B)
    cfg.check("real 3B")
    assert (cfg.v_ffn, cfg.v_ffn_padded) == (3420, 3424)
    plans = plan_tensors(cfg, shapes)
    got = {p.gguf_name: p.ne for p in plans}
    want = expected_ne(cfg)
    assert len(got) == len(plans), "two HF tensors mapped to one GGUF name"
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, list(wrong.items())[:5]
    # Every source tensor is used (tied lm_head excepted): nothing left unmapped or silently dropped.
    used = {s for p in plans for s in p.sources}
    assert set(shapes) - used <= {"lm_head.weight"}
    n_params = sum(torch.Size(s).numel() for n, s in shapes.items() if n != "lm_head.weight")
    assert 3.5e9 < n_params < 4.0e9  # 3.75 B with the vision tower
