"""The converter: deterministic output, and bad input that names the file and what is wrong."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import gguf
import pytest

from app.cli import main as duet
from app.modelhub import convert as convert_mod
from app.modelhub.convert import ConversionError, convert
from app.modelhub.tiny import TinySpec, build_tiny
from app.modelhub.validate import ModelFileError, check_pair


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def hf_copy(tiny_model, tmp_path) -> Path:
    d = tmp_path / "hf"
    shutil.copytree(tiny_model.hf_dir, d)
    return d


def test_tiny_build_is_deterministic_and_small(tiny_model, tmp_path):
    again = build_tiny(TinySpec(), cache_dir=tmp_path)
    assert sha(again.model) == sha(tiny_model.model)
    assert sha(again.mmproj) == sha(tiny_model.mmproj)
    assert again.model.stat().st_size + again.mmproj.stat().st_size < 4_000_000


def test_gguf_metadata_llama_cpp_needs(tiny_model):
    r = gguf.GGUFReader(str(tiny_model.model))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.tokens")}
    assert f["general.architecture"] == "qwen2vl"
    assert f["qwen2vl.rope.dimension_sections"] == [2, 3, 3, 0]
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "qwen2"
    assert f["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in f["tokenizer.chat_template"]
    p = gguf.GGUFReader(str(tiny_model.mmproj))
    pf = {k: v.contents() for k, v in p.fields.items()}
    assert pf["clip.projector_type"] == "qwen2.5vl_merger"
    assert pf["clip.use_silu"] is True and pf["clip.vision.n_wa_pattern"] == 2
    names = {t.name for t in p.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1", "v.post_ln.weight", "mm.0.weight"} <= names


def test_cli_convert_f16(hf_copy, tmp_path, capsys):
    assert duet(["models", "convert", str(hf_copy), "--out", str(tmp_path / "o"), "--outtype", "f16",
                 "--name", "t"]) == 0
    info = check_pair(tmp_path / "o" / "t-f16.gguf", tmp_path / "o" / "mmproj-t-f16.gguf")
    assert info.n_embd == 64
    # An existing output is never overwritten silently.
    assert duet(["models", "convert", str(hf_copy), "--out", str(tmp_path / "o"), "--name", "t"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bf16_output_keeps_the_vision_matrices_bf16_and_answers_like_f32(tiny_model, tmp_path):
    """--outtype bf16 (the dtype MMDuet2 is published in) writes the vision tower's matrices in BF16 too, the
    patch kernels in F32 (ggml's conv has no BF16), and the pair answers like the F32 one."""
    import numpy as np

    from app.engine.llama_backend import LlamaBackend, LlamaSettings

    res = convert(tiny_model.hf_dir, tmp_path, outtype="bf16", name="t")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(res.mmproj)).tensors}
    assert types["v.blk.0.attn_q.weight"] == types["v.blk.0.ffn_down.weight"] == types["mm.0.weight"] \
        == gguf.GGMLQuantizationType.BF16
    assert types["v.patch_embd.weight"] == types["v.patch_embd.weight.1"] == gguf.GGMLQuantizationType.F32
    assert types["v.blk.0.ln1.weight"] == gguf.GGMLQuantizationType.F32
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (168, 252, 3), dtype=np.uint8) for _ in range(2)]
    logits = []
    for model, mmproj in ((tiny_model.model, tiny_model.mmproj), (res.model, res.mmproj)):
        b = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0, kv_type="f32", embed_cache_mib=0))
        try:
            b.step(imgs, "What is happening?", talkativeness=0.0, max_new_tokens=1)
            logits.append(b.last_logits.copy())
        finally:
            b.close()
    f32, bf16 = logits
    # bf16 keeps 8 bits of mantissa (~0.4 % per weight). Measured: max |Δ| 0.014 over a spread of 5.7 (0.24 %);
    # a wrong tensor type or layout moves the logits by whole units. The random model's top two differ by 0.02,
    # so the top token is checked against F32's top 3 only.
    assert float(np.abs(f32 - bf16).max()) < 0.01 * float(f32.max() - f32.min())
    assert int(np.argmax(bf16)) in np.argsort(-f32)[:3]


def test_other_architecture(hf_copy, tmp_path):
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match=r"config\.json: this is a LlamaForCausalLM checkpoint"):
        convert(hf_copy, tmp_path)


def test_missing_files(hf_copy, tmp_path):
    (hf_copy / "tokenizer.json").unlink()
    with pytest.raises(ConversionError, match=r"tokenizer\.json: missing"):
        convert(hf_copy, tmp_path)
    (hf_copy / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"config\.json: missing"):
        convert(hf_copy, tmp_path)


def test_truncated_weights(hf_copy, tmp_path):
    w = hf_copy / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ConversionError, match=r"model\.safetensors: truncated"):
        convert(hf_copy, tmp_path)
    assert not list(tmp_path.glob("*.gguf"))


def test_corrupt_config(hf_copy, tmp_path):
    (hf_copy / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="not valid JSON"):
        convert(hf_copy, tmp_path)


def test_interrupted_conversion_leaves_nothing(hf_copy, tmp_path, monkeypatch):
    """A Ctrl-C in the middle of writing tensors: neither the output nor a temporary file remains."""
    real = convert_mod._encode
    calls = {"n": 0}

    def encode_then_interrupt(arr, qtype):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(arr, qtype)

    monkeypatch.setattr(convert_mod, "_encode", encode_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(hf_copy, out, outtype="f16", name="t")
    assert list(out.iterdir()) == []


def test_pair_validation(tiny_model, tmp_path):
    with pytest.raises(ModelFileError, match="swap the two files"):
        check_pair(tiny_model.mmproj, tiny_model.model)
    other = build_tiny(TinySpec(hidden=128, ffn=256, mrope_section=(4, 6, 6)), cache_dir=tmp_path)
    with pytest.raises(ModelFileError, match="does not belong to"):
        check_pair(tiny_model.model, other.mmproj)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(tiny_model.model.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        check_pair(trunc, tiny_model.mmproj)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        check_pair(tiny_model.hf_dir / "config.json", tiny_model.mmproj)
