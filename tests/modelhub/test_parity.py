"""transformers (float32) vs llama.cpp (F32 GGUF, F32 KV cache) on the tiny model: same next-token logits."""

from __future__ import annotations

import numpy as np
import pytest

from app.capture.resize import fit_frame
from app.core import protocol
from app.engine.llama_native import Chunks, Context, ContextSettings, Model, Projector
from app.modelhub.hf_reference import MARKER, HFReference

TOL = 1e-2


@pytest.fixture(scope="module")
def ref(tiny_model):
    return HFReference(tiny_model.hf_dir)


@pytest.fixture(scope="module")
def llama(tiny_model):
    model = Model(tiny_model.model)
    ctx = Context(model, ContextSettings(n_ctx=4096, kv_type="f32"))
    proj = Projector(tiny_model.mmproj, model, 0, use_gpu=False, flash_attn=-1)
    yield model, ctx, proj
    proj.close()
    ctx.close()
    model.close()


def llama_logits(llama, text: str, images: list[np.ndarray]) -> np.ndarray:
    model, ctx, proj = llama
    ctx.clear()
    with Chunks(proj, text.replace(MARKER, proj.marker), images) as chunks:
        pos = 0
        for i in range(len(chunks.info)):
            pos = chunks.eval_chunk(ctx, i, pos, logits_last=i == len(chunks.info) - 1)
    return ctx.last_logits(model.n_vocab)


def prompt(n_images: int, text: str = "What is happening?") -> str:
    return protocol.system_turn() + protocol.user_turn(n_images, text, MARKER) + protocol.assistant_prefix()


def frames(seed: int, shape: tuple[int, int], n: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def assert_close(a: np.ndarray, b: np.ndarray, record: dict, key: str) -> None:
    diff = float(np.abs(a - b).max())
    record[key] = diff
    assert diff <= TOL, f"{key}: max |Δlogit| {diff:.2e} > {TOL}"
    assert list(np.argsort(-a)[:5]) == list(np.argsort(-b)[:5]), f"{key}: top-5 differs"


@pytest.fixture(scope="module")
def record():
    r: dict[str, float] = {}
    yield r
    print("\nparity max |Δlogit|:", {k: f"{v:.1e}" for k, v in r.items()})


def test_text_prompt(ref, llama, record):
    assert_close(ref.logits(prompt(0)), llama_logits(llama, prompt(0), []), record, "text")


def test_image_multiple_of_28(ref, llama, record):
    imgs = frames(1, (224, 280))  # 8×10 merged tokens, untouched by either preprocessor
    assert_close(ref.logits(prompt(1), imgs), llama_logits(llama, prompt(1), imgs), record, "image 280x224")


def test_image_not_multiple_of_28_after_fit_frame(ref, llama, record):
    raw = frames(2, (150, 200))[0]
    img = fit_frame(raw)  # Duet resizes first, so both libraries get a 28-aligned picture
    assert img.shape[0] % 28 == 0 and img.shape[1] % 28 == 0
    assert_close(ref.logits(prompt(1), [img]), llama_logits(llama, prompt(1), [img]), record, "image 200x150")


def test_raw_unaligned_image_is_preprocessed_differently(ref, llama, record):
    """Why fit_frame exists: given a raw 200×150 frame, llama.cpp pads while HF stretches."""
    raw = frames(2, (150, 200))
    d_raw = float(np.abs(ref.logits(prompt(1), raw) - llama_logits(llama, prompt(1), raw)).max())
    d_fit = float(np.abs(ref.logits(prompt(1), [fit_frame(raw[0])]) -
                         llama_logits(llama, prompt(1), [fit_frame(raw[0])])).max())
    record["raw 200x150 (no fit_frame)"] = d_raw
    assert d_raw > 10 * d_fit


def test_two_images_in_one_turn(ref, llama, record):
    imgs = frames(3, (168, 252), n=2)
    assert_close(ref.logits(prompt(2), imgs), llama_logits(llama, prompt(2), imgs), record, "two images")


def test_vision_mlp_padding_is_exact(tmp_path, record):
    """A vision MLP width that is not a multiple of 32 is zero-padded by the converter (so ggml's tiled
    matrix multiply takes the down-projection) and the model still matches transformers."""
    import gguf

    from app.modelhub.tiny import TinySpec, build_tiny
    from app.modelhub.vision_pad import VISION_FFN_MULTIPLE

    spec = TinySpec(vision_ffn=120)  # 120 % 32 = 24: padded to 128
    tiny = build_tiny(spec, tmp_path)
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(tiny.mmproj).tensors}
    padded = -(-120 // VISION_FFN_MULTIPLE) * VISION_FFN_MULTIPLE
    assert padded == 128
    assert tensors["v.blk.0.ffn_up.weight"].shape == (padded, spec.vision_hidden)
    assert tensors["v.blk.0.ffn_gate.bias"].shape == (padded,)
    assert tensors["v.blk.0.ffn_down.weight"].shape == (spec.vision_hidden, padded)
    assert not tensors["v.blk.0.ffn_up.weight"][120:].any() and not tensors["v.blk.0.ffn_down.weight"][:, 120:].any()
    assert tensors["v.blk.0.ffn_up.weight"][:120].any()

    model = Model(tiny.model)
    ctx = Context(model, ContextSettings(n_ctx=4096, kv_type="f32"))
    proj = Projector(tiny.mmproj, model, 0, use_gpu=False, flash_attn=-1)
    try:
        imgs = frames(4, (168, 252), n=2)
        assert_close(HFReference(tiny.hf_dir).logits(prompt(2), imgs), llama_logits((model, ctx, proj), prompt(2), imgs),
                     record, "padded vision MLP")
    finally:
        proj.close()
        ctx.close()
        model.close()
