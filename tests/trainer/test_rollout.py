"""GRPO rollouts that keep the KV cache across turns equal a full re-prefill of every turn.

Reference: ``play(..., reuse_cache=False)`` calls transformers' ``generate`` on the whole rendered
history each turn (the pre-cache path). The cached path must give the same sampled tokens under the
same seed, and the log-probabilities it records must equal those of one full forward over the final
transcript (what the GRPO loss differentiates), in float32 on the CPU.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from app.trainer.data import Dialogue, DialogueTurn, read_turn_frames
from app.trainer.encode import Encoder
from app.trainer.grpo import token_logps
from app.trainer.modeling import load_policy
from app.trainer.rollout import TurnCache, play, vision_token_ids

TURNS = 6
MAX_NEW = 6


@pytest.fixture(scope="module")
def setup(tiny_model, vtest_avi: Path):
    """The tiny model, its encoder, and a 6-turn clip of real frames with a question in turn 0.

    The random tiny model almost never emits ``<|im_end|>``; its (tied) ``<|im_end|>`` row is set to
    twice the row of a token it samples often, so some turns close and others are cut at the
    length limit: both ways a turn can end are exercised (checked below, not assumed).
    """
    torch.set_num_threads(1)
    enc = Encoder(tiny_model.hf_dir)
    frames = read_turn_frames(vtest_avi, 1.0, 2, 16)[:TURNS]
    d = Dialogue("vtest", [DialogueTurn(f.time, f.images, "What happens?" if i == 0 else "")
                           for i, f in enumerate(frames)])
    model = load_policy(tiny_model.hf_dir)
    r = play(model, enc, d, sample=True, seed=0, max_new_tokens=MAX_NEW)
    top = collections.Counter(t for ids in r.reply_ids for t in ids).most_common(1)[0][0]
    with torch.no_grad():
        model.lm_head.weight[enc.im_end] = 2.0 * model.lm_head.weight[top]
    return model, enc, d


def full_forward_logps(model, enc, d, reply_ids) -> list[float]:
    with torch.no_grad():
        return token_logps(model, enc, enc.encode(d, targets=reply_ids), "cpu").tolist()


def test_cached_rollouts_equal_full_reprefill(setup) -> None:
    model, enc, d = setup
    kinds = set()
    for seed in range(6):
        cached = play(model, enc, d, sample=True, seed=seed, max_new_tokens=MAX_NEW)
        ref = play(model, enc, d, sample=True, seed=seed, max_new_tokens=MAX_NEW, reuse_cache=False)
        assert cached.reply_ids == ref.reply_ids, f"seed {seed}: the cached rollout sampled other tokens"
        assert cached.texts == ref.texts
        flat = [x for turn in cached.logps for x in turn]
        assert flat == pytest.approx([x for turn in ref.logps for x in turn], abs=1e-5)
        assert flat == pytest.approx(full_forward_logps(model, enc, d, cached.reply_ids), abs=1e-5)
        kinds |= {"closed" if ids[-1:] == [enc.im_end] else "cut" for ids in cached.reply_ids}
        if kinds == {"closed", "cut"}:
            break
    assert kinds == {"closed", "cut"}, "no seed gave both a closed and a cut turn: the test exercises less than it says"


def test_greedy_rollouts_equal_full_reprefill(setup) -> None:
    model, enc, d = setup
    cached = play(model, enc, d, sample=False, max_new_tokens=MAX_NEW)
    ref = play(model, enc, d, sample=False, max_new_tokens=MAX_NEW, reuse_cache=False)
    assert cached.reply_ids == ref.reply_ids
    assert [x for t in cached.logps for x in t] == pytest.approx([x for t in ref.logps for x in t], abs=1e-5)


def test_lora_wrapped_policy_rolls_out_with_the_cache(tiny_model, setup) -> None:
    """GRPO may train a LoRA (peft) wrapper: the cache path must see through it."""
    _, enc, d = setup
    model = load_policy(tiny_model.hf_dir, lora=True, lora_r=4, lora_alpha=8)
    cached = play(model, enc, d, sample=True, seed=1, max_new_tokens=MAX_NEW)
    ref = play(model, enc, d, sample=True, seed=1, max_new_tokens=MAX_NEW, reuse_cache=False)
    assert cached.reply_ids == ref.reply_ids
    assert [x for t in cached.logps for x in t] == pytest.approx(full_forward_logps(model, enc, d, cached.reply_ids),
                                                                 abs=1e-5)


def test_rollouts_never_sample_vision_tokens(setup) -> None:
    """A sampled <|image_pad|> would break the next turn's frames; both paths suppress them."""
    model, enc, d = setup
    banned = set(vision_token_ids(enc))
    assert enc.image_pad in banned and enc.vision_start in banned
    with torch.no_grad():  # make the frame slot the policy's favourite token, on a copy of the weights
        saved = model.lm_head.weight[enc.image_pad].clone()
        model.lm_head.weight[enc.image_pad] = 5.0 * model.lm_head.weight[enc.im_end]
    try:
        r = play(model, enc, d, sample=True, seed=3, max_new_tokens=MAX_NEW)
    finally:
        with torch.no_grad():
            model.lm_head.weight[enc.image_pad] = saved
    assert not banned & {t for ids in r.reply_ids for t in ids}


def test_a_prompt_that_does_not_extend_the_cache_is_refused(setup) -> None:
    model, enc, d = setup
    tc = TurnCache(model, enc)
    with torch.no_grad():
        tc.prefill(enc.prompt(d, 1, [[enc.im_end]]))
        other = Dialogue(d.id, [DialogueTurn(t.time, t.images, "Something else?") for t in d.turns])
        with pytest.raises(RuntimeError, match="does not extend"):
            tc.prefill(enc.prompt(other, 2, [[enc.im_end], [enc.im_end]]))
