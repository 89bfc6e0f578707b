"""Evaluating a dialogue turn by turn on top of the KV cache == evaluating the whole history at once."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.llama_native import Chunks, Context, ContextSettings

TURNS = [  # (number of frames, user text, talkativeness: + speaks, − stays silent)
    (2, "What is happening?", -50.0),
    (2, "", -50.0),
    (2, "", +50.0),
    (1, "Where is the red car?", -50.0),
    (2, "", +50.0),
    (2, "", -50.0),
]


def dialogue_frames(seed: int = 7) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, (168, 224, 3), dtype=np.uint8) for _ in range(n)] for n, _, _ in TURNS]


def full_history_logits(backend: LlamaBackend, ctx: Context, text: str, images: list[np.ndarray]) -> np.ndarray:
    ctx.clear()
    with Chunks(backend.proj, text, images) as chunks:
        pos = 0
        for i in range(len(chunks.info)):
            pos = chunks.eval_chunk(ctx, i, pos, logits_last=i == len(chunks.info) - 1)
    return ctx.last_logits(backend.model.n_vocab)


@pytest.mark.parametrize("kv_type", ["f32", "f16", "bf16"])
def test_incremental_equals_full_history(tiny_model, kv_type):
    """F32, F16 and BF16 caches alike (measured: the logits agree bit for bit on this CPU build; 1e-3 leaves
    room for other kernels, while an off-by-one position or a lost tail moves them by whole units)."""
    backend = LlamaBackend(tiny_model.model, tiny_model.mmproj,
                           LlamaSettings(n_ctx=4096, n_gpu_layers=0, kv_type=kv_type))
    fresh = Context(backend.model, ContextSettings(n_ctx=4096, kv_type=kv_type, flash_attn=backend.ctx.flash_attn))
    marker = backend.proj.marker
    history = protocol.system_turn()
    seen: list[np.ndarray] = []
    worst = 0.0
    try:
        for (n, text, bias), imgs in zip(TURNS, dialogue_frames()):
            out = backend.step(imgs, text, talkativeness=bias, max_new_tokens=6)
            seen += imgs
            history += protocol.user_turn(n, text, marker) + protocol.assistant_prefix()
            ref = full_history_logits(backend, fresh, history, seen)
            diff = float(np.abs(ref - backend.last_logits).max())
            worst = max(worst, diff)
            assert diff < 1e-3, f"turn {len(seen)}: incremental vs full max |Δ| {diff:.2e}"
            assert int(np.argmax(ref)) == int(np.argmax(backend.last_logits))
            assert out.silent == (bias < 0)
            history += protocol.assistant_tail(out.text)
    finally:
        fresh.close()
        backend.close()
    print(f"\nincremental vs full history, {len(TURNS)} turns: max |Δlogit| {worst:.1e}")
