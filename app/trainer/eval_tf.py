"""Teacher-forced per-turn accuracy: the fast diagnostic of a proactive policy.

One forward per dialogue (gold history), then for every assistant turn: did the argmax of its first
token make the right *decision* (``NO REPLY`` vs speaking), and did the argmax reproduce the whole
target (*text*, ``<|im_end|>`` included)? Reported over all turns, over the reply turns only and over
the silent turns only, so "always silent" (high all-turn decision accuracy, zero reply accuracy) is
visible at once.

:func:`shuffled_frames` swaps each dialogue's frames for those of another dialogue of the same task
(the next one in order), keeping its targets: a policy that really reads the frames loses accuracy
there; one that learned "answer X at turn k" does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from app.core import protocol
from app.trainer.data import Dialogue, dialogue_from_example
from app.trainer.encode import Encoded, Encoder


def _task(d: Dialogue) -> str:
    return d.id.split("/")[-1].split("-")[0]


def heldout_dialogues(src: Any, dataset: Any, seed: int = 0) -> list[Dialogue]:
    """The gold (1QnA) training-form dialogues of held-out examples, frames from ``src.frames``."""
    return [dialogue_from_example(ex, src.frames[ex.id]) for ex in dataset]


def shuffled_frames(dialogues: Sequence[Dialogue]) -> list[Dialogue]:
    by_task: dict[str, list[int]] = {}
    for i, d in enumerate(dialogues):
        by_task.setdefault(_task(d), []).append(i)
    out = list(dialogues)
    for idx in by_task.values():
        for k, i in enumerate(idx):
            donor = dialogues[idx[(k + 1) % len(idx)]]
            d = dialogues[i]
            turns = [replace(t, images=donor.turns[min(j, len(donor.turns) - 1)].images)
                     for j, t in enumerate(d.turns)]
            out[i] = replace(d, turns=turns)
    return out


def teacher_forced(model: Any, enc: Encoder, encoded: Sequence[Encoded], dialogues: Sequence[Dialogue],
                   device: Any = "cpu") -> dict[str, Any]:
    import torch

    no_first = enc.text_ids(protocol.NO_REPLY)[0]
    n = dec = txt = 0
    nr = dec_r = txt_r = 0
    ns = dec_s = 0
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for e, d in zip(encoded, dialogues, strict=True):
                logits = model(**e.model_inputs(enc.image_pad, device)).logits[0]
                pred = logits.argmax(-1).cpu()
                for (a, b), turn in zip(e.assistant_spans, d.turns, strict=True):
                    gold = e.input_ids[a:b]
                    guess = pred[a - 1:b - 1]
                    silent = turn.target == protocol.NO_REPLY
                    ok_dec = (int(guess[0]) == no_first) == silent
                    ok_txt = bool((guess == gold).all())
                    n += 1
                    dec += ok_dec
                    txt += ok_txt
                    if silent:
                        ns += 1
                        dec_s += ok_dec
                    else:
                        nr += 1
                        dec_r += ok_dec
                        txt_r += ok_txt
    finally:
        if was:
            model.train()

    def r(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {"turns": n, "decision": r(dec, n), "text": r(txt, n), "reply_turns": nr, "reply_decision": r(dec_r, nr),
            "reply_text": r(txt_r, nr), "silent_decision": r(dec_s, ns)}
