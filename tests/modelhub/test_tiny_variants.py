"""Tiny-model variants: the favouring rewrite changes exactly the weights it names, is cached, and refuses bad tokens."""

from __future__ import annotations

import shutil

import gguf
import numpy as np
import pytest

from app.modelhub.tiny_variants import LIFT_BASE, LIFT_STEP, build_tiny_favouring


@pytest.fixture
def cache(tiny_model, tmp_path):
    """An empty cache but for the base tiny model (copied: building it again costs seconds)."""
    entry = tiny_model.model.parent
    shutil.copytree(entry, tmp_path / entry.name)
    return tmp_path


def tensors(path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def test_favouring_rewrites_only_the_lifted_dimension(tiny_model):
    """Against the base model's GGUF: the embedding's last column is lifted (most for the first token named),
    that row of each attention output and MLP down projection is zeroed, and nothing else differs."""
    variant = build_tiny_favouring(["<|im_start|>", 700])
    base, new = tensors(tiny_model.model), tensors(variant.model)
    assert base.keys() == new.keys()
    reader = gguf.GGUFReader(tiny_model.model)
    field = reader.fields["tokenizer.ggml.tokens"]
    names = [bytes(field.parts[i]).decode() for i in field.data]
    im_start = names.index("<|im_start|>")
    d = base["token_embd.weight"].shape[1] - 1
    changed = set()
    for name in base:
        if np.array_equal(base[name], new[name]):
            continue
        changed.add(name)
        a, b = base[name], new[name]
        if name == "token_embd.weight":
            np.testing.assert_array_equal(a[:, :d], b[:, :d])
            lift = np.full(len(a), LIFT_BASE, dtype=np.float32)
            lift[700], lift[im_start] = LIFT_BASE + LIFT_STEP, LIFT_BASE + 2 * LIFT_STEP
            np.testing.assert_array_equal(b[:, d], lift)
        else:
            np.testing.assert_array_equal(np.delete(a, d, axis=0), np.delete(b, d, axis=0))
            assert not b[d].any()
    n_layers = sum(1 for n in base if n.endswith("attn_output.weight"))
    assert changed == {"token_embd.weight"} | {f"blk.{i}.{t}.weight" for i in range(n_layers)
                                               for t in ("attn_output", "ffn_down")}
    assert tensors(variant.mmproj).keys() == tensors(tiny_model.mmproj).keys()
    for name, w in tensors(tiny_model.mmproj).items():
        np.testing.assert_array_equal(w, tensors(variant.mmproj)[name])


def test_favouring_is_cached_by_tokens(cache):
    a = build_tiny_favouring(["<|vision_start|>"], cache_dir=cache)
    stamp = a.model.stat().st_mtime_ns
    assert build_tiny_favouring(["<|vision_start|>"], cache_dir=cache) == a
    assert a.model.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert build_tiny_favouring(["<|vision_end|>"], cache_dir=cache).model.parent != a.model.parent
    assert not list(cache.glob(".building-*"))


@pytest.mark.parametrize(("tokens", "message"), [
    (["<|no_such_token|>"], "not an added token"),
    ([10_000], "not an added token"),
    (["<|vision_start|>", "<|vision_start|>"], "repeat"),
])
def test_favouring_refuses_unknown_or_repeated_tokens(cache, tokens, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_favouring(tokens, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1  # the base model alone: nothing half-made left behind
