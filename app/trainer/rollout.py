"""Playing a clip turn by turn with the current policy (transformers), for GRPO and for held-out PAUC.

Each turn prefills the new user turn (its frames and text, then ``<|im_start|>assistant\\n``) on top
of a KV cache that already holds the clip's history (system, earlier user turns with their frames,
the policy's own earlier replies as the tokens it sampled), then decodes the reply into the same
cache (:class:`TurnCache`, docs/protocol.md §4.1). Prefill per clip is thus O(tokens), as in the
engine, where re-prefilling the history every turn (``reuse_cache=False``, ``generate`` on the
whole prompt, kept as the tested reference) costs O(turns²): ≈ 8× one pass for a 60 s segment of
the 3B (15 turns of 4 s), and the frames of every earlier turn go through the vision tower again.

Sampling follows the paper's rollout (§2.6): temperature 1.2, top-k 10, no repetition penalty,
``max_new_tokens`` per turn; the evaluation path decodes greedily like the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core import protocol
from app.eval.dataset import Dataset, Example
from app.trainer.data import Dialogue, DialogueTurn, TurnFrames, question_turn
from app.trainer.encode import Encoded, Encoder


@dataclass
class Rollout:
    example_id: str
    times: list[float]
    texts: list[str]  # decoded, stripped ("NO REPLY" on silence)
    reply_ids: list[list[int]]  # sampled ids per turn, <|im_end|> included when the turn closed
    dialogue: Dialogue = field(repr=False, default=None)  # type: ignore[assignment]
    # log-probability (untempered) of each sampled id under the policy that sampled it, per turn
    logps: list[list[float]] = field(repr=False, default_factory=list)

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
         max_new_tokens: int = 24, seed: int = 0, device: Any = "cpu", reuse_cache: bool = True) -> Rollout:
    """One pass over the clip; deterministic in ``seed`` (torch's RNG is reseeded here).

    ``reuse_cache`` (the default) keeps one KV cache for the whole clip (:class:`TurnCache`);
    ``False`` re-prefills the history with ``generate`` every turn, the slower reference that the
    tests compare the cached path against (same transcript, same log-probs, same samples).
    """
    import torch

    eos = [enc.im_end, enc.tokenizer.convert_tokens_to_ids(protocol.ENDOFTEXT)]
    banned = vision_token_ids(enc)
    torch.manual_seed(seed)
    reply_ids: list[list[int]] = []
    logps: list[list[float]] = []
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            turns = TurnCache(model, enc, device) if reuse_cache else None
            for i in range(len(dialogue.turns)):
                p = enc.prompt(dialogue, i, reply_ids)
                if turns is not None:
                    new, lps = turns.reply(p, sample=sample, temperature=temperature, top_k=top_k,
                                           max_new_tokens=max_new_tokens, eos=eos, suppress=banned)
                else:
                    new, lps = _generate_reply(model, enc, p, sample=sample, temperature=temperature, top_k=top_k,
                                               max_new_tokens=max_new_tokens, eos=eos, suppress=banned,
                                               device=device)
                closed = False
                while new and new[-1] in eos:  # stop token(s): keep one canonical <|im_end|>
                    new.pop()
                    closed = True
                text = enc.tokenizer.decode(new, skip_special_tokens=True).strip()
                reply_ids.append(new + ([enc.im_end] if closed else []))
                logps.append(lps)
                texts.append(text or protocol.NO_REPLY)
    finally:
        if was_training:
            model.train()
    return Rollout(dialogue.id, [t.time for t in dialogue.turns], texts, reply_ids, dialogue, logps)


def _generate_reply(model: Any, enc: Encoder, p: Encoded, *, sample: bool, temperature: float, top_k: int,
                    max_new_tokens: int, eos: list[int], suppress: list[int],
                    device: Any) -> tuple[list[int], list[float]]:
    """One turn by ``generate`` on the whole re-prefilled history (the pre-cache path, kept as the reference)."""
    import torch

    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos[1],
                                      suppress_tokens=suppress, output_logits=True, return_dict_in_generate=True)
    if sample:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=1.0, repetition_penalty=1.0)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None, repetition_penalty=1.0)
    inputs = p.model_inputs(enc.image_pad, device)
    out = model.generate(**inputs, **gen_kwargs)
    new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    lps = [float(torch.log_softmax(lg[0].float(), -1)[t]) for lg, t in zip(out.logits, new, strict=False)]
    return new, lps


class TurnCache:
    """A clip's KV cache kept across turns: each turn prefills only what is new since the last one.

    Per turn the cache already holds the history up to the previous reply's last *fed* token; the
    turn's chunk is the rest of the prompt ``Encoder.prompt`` renders (the last sampled token, the
    closing ``<|im_end|>`` and ``\\n``, the new user turn with its frames and text, and
    ``<|im_start|>assistant\\n``). Because the chunk is cut from the same full prompt the re-prefill
    path feeds (and its head is checked to equal what the cache holds), the transcript is the same
    byte for byte.

    Why positions and pixels are passed by hand: the forward of transformers' Qwen2.5-VL computes
    M-RoPE positions itself only while the cache is empty, and with a non-empty cache it continues
    them as text. Here the 3-D positions of the whole prompt are computed with the model's own
    ``get_rope_index`` and the chunk's slice is passed as ``position_ids``, and only the new frames'
    ``pixel_values`` go through the vision tower (its attention is per image, so encoding a frame
    alone equals encoding it with the others). Decoded tokens are text: each gets the next position.
    """

    def __init__(self, model: Any, enc: Encoder, device: Any = "cpu") -> None:
        self.model = model
        self.enc = enc
        self.device = device
        self.cache: Any = None
        self.ids: list[int] = []  # the tokens whose keys and values the cache holds
        self.n_images = 0
        self.next_pos = 0
        # transformers 5 renamed ``past_key_values`` to ``cache``; ask the unwrapped (not LoRA) model
        params = inspect.signature(_unwrap(model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _forward(self, ids: list[int], position_ids: Any, pixel_values: Any = None, grid: Any = None) -> Any:
        import torch

        t = torch.tensor([ids], device=self.device)
        kw: dict[str, Any] = {"input_ids": t, "position_ids": position_ids.to(self.device), "use_cache": True,
                              "mm_token_type_ids": (t == self.enc.image_pad).long(), self._cache_kw: self.cache,
                              "logits_to_keep": 1}
        if pixel_values is not None:
            kw.update(pixel_values=pixel_values.to(self.device), image_grid_thw=grid.to(self.device))
        out = self.model(**kw)
        self.cache = getattr(out, self._cache_kw)
        self.ids.extend(ids)
        return out.logits[0, -1].float()

    def prefill(self, p: Encoded) -> Any:
        """Feed the part of prompt ``p`` the cache lacks; the next-token logits."""
        import torch

        full = p.input_ids.tolist()
        k = len(self.ids)
        if full[:k] != self.ids or len(full) <= k:
            raise RuntimeError("TurnCache: the prompt does not extend the cached history (a bug in the caller)")
        ids = full[k:]
        pv = grid = None
        if p.image_grid_thw is not None and len(p.image_grid_thw) > self.n_images:
            grids = p.image_grid_thw
            skip = int(grids[: self.n_images].prod(dim=1).sum())
            pv, grid = p.pixel_values[skip:], grids[self.n_images:]
            self.n_images = len(grids)
        if p.image_grid_thw is not None:
            pos, _ = _rope_index(self.model, p.input_ids, self.enc.image_pad, p.image_grid_thw)
            pos = pos[:, :, k:]
        else:
            pos = torch.arange(self.next_pos, self.next_pos + len(ids)).view(1, 1, -1).expand(3, 1, -1)
        self.next_pos = int(pos[:, 0, -1].max()) + 1
        return self._forward(ids, pos, pv, grid)

    def step(self, token: int) -> Any:
        """Feed one decoded token; the next-token logits."""
        import torch

        pos = torch.full((3, 1, 1), self.next_pos, dtype=torch.long)
        self.next_pos += 1
        return self._forward([token], pos)

    def reply(self, p: Encoded, *, sample: bool, temperature: float, top_k: int, max_new_tokens: int,
              eos: list[int], suppress: Sequence[int] = ()) -> tuple[list[int], list[float]]:
        """Decode one turn after prompt ``p``, as ``generate`` would: (token ids, their log-probs).

        Sampling applies transformers' own processors (``suppress`` tokens, temperature, top-k), then
        ``torch.multinomial`` on the softmax, the order ``generate`` uses, so a seed gives the same
        tokens on both paths.
        The last token is not fed: the next turn's prefill starts with it.
        """
        import torch
        from transformers import (
            LogitsProcessorList,
            SuppressTokensLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
        )

        warp = LogitsProcessorList()
        if suppress:
            warp.append(SuppressTokensLogitsProcessor(list(suppress)))  # moved to the logits' device
        if sample:
            if temperature != 1.0:
                warp.append(TemperatureLogitsWarper(temperature))
            if top_k:
                warp.append(TopKLogitsWarper(top_k))
        logits = self.prefill(p)
        new: list[int] = []
        lps: list[float] = []
        for n in range(max_new_tokens):
            scores = warp(None, logits[None])[0]
            if sample:
                tok = int(torch.multinomial(torch.softmax(scores, -1), 1))
            else:
                tok = int(torch.argmax(scores))
            new.append(tok)
            lps.append(float(torch.log_softmax(logits, -1)[tok]))
            if tok in eos or n == max_new_tokens - 1:
                break
            logits = self.step(tok)
        return new, lps


def vision_token_ids(enc: Encoder) -> list[int]:
    """Tokens a reply must never contain: a sampled ``<|image_pad|>`` would be read as a frame's slot
    by the next turn's prefill (and fail the placeholder count), so rollouts suppress them."""
    tid = enc.tokenizer.convert_tokens_to_ids
    return [t for t in (tid(x) for x in (protocol.VISION_START, protocol.VISION_END, protocol.IMAGE_PAD,
                                         protocol.VIDEO_PAD)) if t is not None and t != enc.tokenizer.unk_token_id]


def _unwrap(model: Any) -> Any:
    """The transformers model under a peft (LoRA) wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _rope_index(model: Any, input_ids: Any, image_pad: int, grid: Any) -> tuple[Any, Any]:
    """The model's M-RoPE positions [3, 1, T] of a whole sequence (LoRA-wrapped or not)."""
    inner = _unwrap(model)
    while not hasattr(inner, "get_rope_index"):
        inner = inner.model
    ids = input_ids.unsqueeze(0)
    return inner.get_rope_index(ids, image_grid_thw=grid, mm_token_type_ids=(ids == image_pad).long())


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
