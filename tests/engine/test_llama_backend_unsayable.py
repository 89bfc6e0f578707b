"""The engine's unsayable-token rule, walked on a model that ranks a control token and a padding token first.

A reply can never contain a control token (other than end-of-turn) or an unused padding token
(``Model.unsayable``): the engine masks them at the speak-or-silence decision and at every decoded
token, so it decides and decodes from the best *sayable* token. Neither the random tiny model nor the
trained demo ever ranks such a token first, so on them the mask changes nothing. Here the tiny model
is rewritten (:func:`app.modelhub.tiny_variants.build_tiny_favouring`) so that ``<|vision_start|>``,
then the last padding id, beat every other token at every text position, and the engine is held to an
oracle: the whole history evaluated afresh, greedy over the tokens the GGUF's own token types allow.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from app.capture.resize import fit_frame
from app.capture.video import VideoFileSource
from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.llama_native import Chunks, Context, ContextSettings
from app.engine.llama_reference import NO_GUARD
from app.modelhub.tiny_variants import build_tiny_favouring

CONTROL = protocol.VISION_START
TOKENS_PER_FRAME = 16
MAX_NEW = 8


@pytest.fixture(scope="module")
def favouring(tiny_model):
    """The tiny model with <|vision_start|> ranked first and the last padding id second, after any text token."""
    import json

    n_vocab = json.loads((tiny_model.hf_dir / "config.json").read_text())["text_config"]["vocab_size"]
    pad = n_vocab - 1  # the embedding is padded to a multiple of 64: the last ids are UNUSED
    return build_tiny_favouring([CONTROL, pad]), pad


def oracle_unsayable(model: Path, backend: LlamaBackend) -> np.ndarray:
    """Control and unused tokens by the GGUF's own token-type table (end-of-turn tokens stay sayable)."""
    field = gguf.GGUFReader(model).fields["tokenizer.ggml.token_type"]
    types = np.array([int(field.parts[i][0]) for i in field.data])
    bad = np.isin(types, [gguf.TokenType.CONTROL, gguf.TokenType.UNUSED])
    return np.array([t for t in np.flatnonzero(bad) if not backend.model.is_eog(int(t))])


def oracle_step(backend: LlamaBackend, ctx: Context, history: str, images: list[np.ndarray], unsayable: np.ndarray,
                talkativeness: float, favoured: tuple[int, int]) -> tuple[str, float, list[int]]:
    """What the engine must answer: (reply text, first-token margin, reply tokens), from the whole history
    evaluated afresh and greedy decoding over sayable tokens. Checks on the way that the favoured tokens
    really top the raw logits at the decision and at every decoded token (else the test proves nothing)."""
    model = backend.model
    ctx.clear()
    with Chunks(backend.proj, history, images) as chunks:
        pos = 0
        for i in range(len(chunks.info)):
            pos = chunks.eval_chunk(ctx, i, pos, logits_last=i == len(chunks.info) - 1)
    no_first = model.tokenize(protocol.NO_REPLY)[0]
    quiet = [no_first] + [t for t in model.tokenize(protocol.IM_END + protocol.ENDOFTEXT) if model.is_eog(t)]
    speaking = np.setdiff1d(np.arange(model.n_vocab), np.concatenate([quiet, unsayable]))
    logits = ctx.last_logits(model.n_vocab)
    tokens: list[int] = []
    for step in range(MAX_NEW):
        assert list(np.argsort(-logits)[:2]) == list(favoured), f"token {step}: the favoured tokens are not on top"
        sayable = logits.copy()
        sayable[unsayable] = -np.inf
        if step == 0:
            sayable[quiet] -= talkativeness
            margin = float(sayable[speaking].max() - sayable[quiet].max())
            if int(np.argmax(sayable)) == no_first:
                return protocol.NO_REPLY, margin, []  # instant silence
        tok = int(np.argmax(sayable))
        if model.is_eog(tok):
            break
        tokens.append(tok)
        ctx.decode_tokens([tok], pos)
        pos += 1
        logits = ctx.last_logits(model.n_vocab)
    return model.detokenize(tokens), margin, tokens


def test_unsayable_tokens_ranked_first_are_skipped_at_the_decision_and_in_replies(favouring, vtest_avi):
    """Silent and spoken steps alike decide and decode exactly as greedy over sayable tokens only.

    The control token leads every sayable one by ~20 logits: were it not masked at the decision, every
    step would speak (and the margin would be ~20); were it not masked while decoding, a reply's
    second token would be it. Talkativeness alternates so that some steps must be silent.
    """
    tiny, pad = favouring
    backend = LlamaBackend(tiny.model, tiny.mmproj, LlamaSettings(n_ctx=4096, n_gpu_layers=0, kv_type="f32",
                                                                 guard=NO_GUARD))
    fresh = Context(backend.model, ContextSettings(n_ctx=4096, kv_type="f32", flash_attn=backend.ctx.flash_attn))
    control = backend.model.tokenize(CONTROL)[0]
    unsayable = oracle_unsayable(tiny.model, backend)
    assert {control, pad} <= set(unsayable.tolist())
    with VideoFileSource(vtest_avi, realtime=False) as src:
        frames = [fit_frame(f.image, TOKENS_PER_FRAME) for _, f in zip(range(6), src.sample(1.0), strict=False)]
    history, seen = protocol.system_turn(), []
    kinds: set[str] = set()
    try:
        for n, talk in enumerate([0.0, -8.0, 0.0, -8.0, 4.0, 0.0]):
            imgs, text = [frames[n]], "What is happening on the street?" if n == 0 else ""
            out = backend.step(imgs, text, talkativeness=talk, max_new_tokens=MAX_NEW)
            seen += imgs
            history += protocol.user_turn(1, text, backend.proj.marker) + protocol.assistant_prefix()
            want_text, want_margin, want_tokens = oracle_step(backend, fresh, history, seen, unsayable, talk,
                                                              (control, pad))
            assert out.first_token_margin == pytest.approx(want_margin, abs=1e-3), f"turn {n}"
            assert out.text == want_text, f"turn {n}"
            assert out.silent == (want_text == protocol.NO_REPLY or not want_text.strip()), f"turn {n}"
            kinds.add("silent" if out.silent else "reply" if len(want_tokens) < 2 else "long reply")
            history += protocol.assistant_tail(out.text)
    finally:
        fresh.close()
        backend.close()
    assert {"silent", "long reply"} <= kinds, kinds
