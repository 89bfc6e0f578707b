"""Playing a clip turn by turn with the current policy (transformers), for GRPO and for held-out PAUC.

Each turn is one ``generate`` call on the rendered history (system, earlier user turns with their
frames, the policy's own earlier replies as the tokens it sampled) plus the new user turn and
``<|im_start|>assistant\\n``; within the turn, decoding reuses the KV cache.

KV reuse *across* turns (§4.1) is not done here: this is the documented slower fallback, a full
re-prefill per turn, because transformers' Qwen2.5-VL drops ``pixel_values`` once the cache is
non-empty and its M-RoPE positions would then be wrong for the new frames. It is correct by
construction (every turn sees exactly what a fresh forward sees) and, for the short clips GRPO uses
(the paper: 20–60 s segments), costs O(turns²) prefill tokens: ~5 turns here, ~15 turns (4 s each)
for a 60 s segment of the 3B. The engine (llama.cpp) does encode each turn's frames once.

Sampling follows the paper's rollout (§2.6): temperature 1.2, top-k 10, no repetition penalty,
``max_new_tokens`` per turn; the evaluation path decodes greedily like the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core import protocol
from app.eval.dataset import Dataset, Example
from app.trainer.data import Dialogue, DialogueTurn, TurnFrames, question_turn
from app.trainer.encode import Encoder


@dataclass
class Rollout:
    example_id: str
    times: list[float]
    texts: list[str]  # decoded, stripped ("NO REPLY" on silence)
    reply_ids: list[list[int]]  # sampled ids per turn, <|im_end|> included when the turn closed
    dialogue: Dialogue = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def replies(self) -> list[tuple[float, str]]:
        return [(t, x) for t, x in zip(self.times, self.texts, strict=True) if not protocol.is_silence(x)]


def stream_dialogue(ex: Example, frames: Sequence[TurnFrames]) -> Dialogue:
    """The inference-time chat skeleton: frames per turn and questions where the session puts them."""
    times = [f.time for f in frames]
    texts: dict[int, list[str]] = {}
    for q in ex.questions:
        i = question_turn(times, q.time)
        if i is not None:
            texts.setdefault(i, []).append(q.text)
    turns = [DialogueTurn(f.time, list(f.images), " ".join(texts.get(i, []))) for i, f in enumerate(frames)]
    return Dialogue(ex.id, turns)


def play(model: Any, enc: Encoder, dialogue: Dialogue, *, sample: bool, temperature: float = 1.2, top_k: int = 10,
         max_new_tokens: int = 24, seed: int = 0, device: Any = "cpu") -> Rollout:
    """One pass over the clip; deterministic in ``seed`` (torch's RNG is reseeded here)."""
    import torch

    eos = [enc.im_end, enc.tokenizer.convert_tokens_to_ids(protocol.ENDOFTEXT)]
    pad = eos[1]
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)
    if sample:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=1.0, repetition_penalty=1.0)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None, repetition_penalty=1.0)
    torch.manual_seed(seed)
    reply_ids: list[list[int]] = []
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(len(dialogue.turns)):
                p = enc.prompt(dialogue, i, reply_ids)
                inputs = p.model_inputs(enc.image_pad, device)
                out = model.generate(**inputs, **gen_kwargs)
                new = out[0, inputs["input_ids"].shape[1]:].tolist()
                closed = False
                while new and new[-1] in eos:  # stop token(s): keep one canonical <|im_end|>
                    new.pop()
                    closed = True
                text = enc.tokenizer.decode(new, skip_special_tokens=True).strip()
                reply_ids.append(new + ([enc.im_end] if closed else []))
                texts.append(text or protocol.NO_REPLY)
    finally:
        if was_training:
            model.train()
    return Rollout(dialogue.id, [t.time for t in dialogue.turns], texts, reply_ids, dialogue)


def greedy_predictions(model: Any, enc: Encoder, dataset: Dataset, frames: dict[str, list[TurnFrames]],
                       max_new_tokens: int = 24, device: Any = "cpu") -> dict[str, Any]:
    """What the policy says on each example with greedy decoding, as eval ``Prediction`` records."""
    from app.eval.predictions import Prediction

    preds = {}
    for ex in dataset:
        r = play(model, enc, stream_dialogue(ex, frames[ex.id]), sample=False, max_new_tokens=max_new_tokens,
                 device=device)
        preds[ex.id] = Prediction(ex.id, [(round(t, 3), x) for t, x in r.replies], len(r.times),
                                  meta={"texts": r.texts})
    return preds


def heldout_pauc(model: Any, enc: Encoder, dataset: Dataset, frames: dict[str, list[TurnFrames]], judge: Any,
                 max_new_tokens: int = 24, device: Any = "cpu") -> dict[str, Any]:
    """Held-out PAUC (ω = 0.5, the eval definition) and reply statistics of greedy decoding."""
    from app.eval.scoring import score_dataset

    preds = greedy_predictions(model, enc, dataset, frames, max_new_tokens, device)
    res = score_dataset(dataset, preds, judge)
    s = res.summary
    n_turns = sum(p.n_turns for p in preds.values())
    return {"pauc": s.pauc[0.5], "pauc_w0": s.pauc[0.0], "pauc_w1": s.pauc[1.0], "replies": s.replies,
            "turns": n_turns, "gold_turns": s.n_turns, "out_of_span_replies": s.out_of_span_replies,
            "turns_without_reply": s.n_turns_no_reply, "duplicate_proportion": s.duplicate_proportion,
            "predictions": {k: v.to_json() for k, v in preds.items()}}
