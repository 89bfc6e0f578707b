"""A ready-made projector with an unpadded vision MLP is padded on import, and answers exactly as before."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.modelhub import convert as convert_mod
from app.modelhub import vision_pad
from app.modelhub.tiny import TinySpec, build_tiny
from app.modelhub.vision_pad import pad_vision_mlp, padded_width

SPEC = TinySpec(vision_ffn=120)  # 120 % 32 = 24: another converter would leave it so


@pytest.fixture(scope="module")
def unpadded(tmp_path_factory):
    """The tiny model (vision MLP 120 wide) converted the way other converters do: no padding."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision_pad, "VISION_FFN_MULTIPLE", 1)
        tiny = build_tiny(SPEC, tmp_path_factory.mktemp("unpadded"))
    return tiny


def first_logits(model, mmproj, imgs) -> np.ndarray:
    b = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0, kv_type="f32", embed_cache_mib=0))
    try:
        b.step(imgs, "What is happening?", talkativeness=0.0, max_new_tokens=1)
        return b.last_logits.copy()
    finally:
        b.close()


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_padding_a_ready_projector_changes_nothing_but_its_width(unpadded, tmp_path, outtype):
    if outtype == "f32":
        model, src = unpadded.model, unpadded.mmproj
    else:  # a BF16 projector: its tensors are read as raw bytes, two per value
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(vision_pad, "VISION_FFN_MULTIPLE", 1)
            res = convert_mod.convert(unpadded.hf_dir, tmp_path / "bf16", outtype="bf16", name="t")
        model, src = res.model, res.mmproj
    assert padded_width(src) == 128
    dst = tmp_path / "mmproj-padded.gguf"
    assert pad_vision_mlp(src, dst)
    before, after = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(dst))
    assert after.fields["clip.vision.feed_forward_length"].contents() == 128
    old = {t.name: t for t in before.tensors}
    for t in after.tensors:
        o = old.pop(t.name)
        assert t.tensor_type == o.tensor_type
        if ".ffn_" in t.name and not t.name.endswith("ffn_down.bias"):
            assert 128 in [int(n) for n in t.shape] and 120 in [int(n) for n in o.shape]
        else:
            assert np.array_equal(np.asarray(t.data), np.asarray(o.data)), t.name
    assert not old
    for key, f in before.fields.items():
        if not key.startswith("GGUF.") and key != "clip.vision.feed_forward_length":
            assert after.fields[key].contents() == f.contents(), key
    assert padded_width(dst) is None  # nothing left to do: importing it again is a plain copy
    rng = np.random.default_rng(7)
    imgs = [rng.integers(0, 256, (168, 252, 3), dtype=np.uint8) for _ in range(2)]
    a, b = first_logits(model, src, imgs), first_logits(model, dst, imgs)
    # F32: the same sums in another order. BF16: ggml's tiled kernel (native BF16 products) replaces the
    # row-by-row one, which rounds differently; measured 0.2 % of the logits' spread.
    tol = 1e-3 if outtype == "f32" else 1e-2
    assert float(np.abs(a - b).max()) < tol * float(a.max() - a.min())


def test_what_is_left_alone(unpadded, tiny_model, tmp_path):
    assert padded_width(tiny_model.mmproj) is None  # 128 wide already
    assert padded_width(unpadded.model) is None  # a text model, not a projector
    assert not pad_vision_mlp(tiny_model.mmproj, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
