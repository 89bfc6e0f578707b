"""Nothing else is forgotten: the new model's decisions on held-out clips against the base's, through the engine.

After ``duet train feedback`` the exported GGUF and the base's GGUF are both played (the real engine, evaluation
mode: every frame, greedy) on clips no session and no replay example showed: for the demo, its own held-out
synthetic clips (``data.heldout_synthetic``), for another base the ``heldout_files``. Compared per turn:

* a **decision** changed: one model speaks where the other is silent; such a change is a *move* when it is one
  reply said one turn earlier or later in the same words (a timing correction generalising to a like moment of
  another clip, which the held-out PAUC then judges); every other change (a reply lost, a new one) is listed as
  unexplained;
* a **text** changed: both speak, other words.

And held-out PAUC (ω = 0.5, exact-match judge, the training's own) before and after, with the **noise of one
reply**: how much the base's PAUC moves when one of its replies that scores is taken away (the mean over
those replies, and the largest). A fall in PAUC smaller than that is within what a single reply decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def heldout_dataset(cfg: Any) -> Any:
    """The held-out examples of the recipe (``app.eval.dataset.Dataset``), videos resolved."""
    from app.eval.dataset import Dataset
    from app.trainer.data import load_examples, synthetic_dataset

    exs = []
    if cfg.data.heldout_synthetic is not None:
        exs += load_examples(synthetic_dataset(cfg.data.heldout_synthetic, cfg.out / "data"))
    for f in cfg.data.heldout_files:
        exs += load_examples(f)
    return Dataset(exs)


def _pauc(dataset: Any, preds: dict) -> float | None:
    from app.eval.judges import make_judge
    from app.eval.scoring import score_dataset

    return score_dataset(dataset, preds, make_judge("exact")).summary.pauc[0.5]


def one_reply_noise(dataset: Any, preds: dict) -> dict[str, float | int | None]:
    """PAUC change when one reply is removed, over every reply whose removal changes it: mean and max |Δ|."""
    from dataclasses import replace

    base = _pauc(dataset, preds)
    if base is None:
        return {"mean": None, "max": None, "replies": 0}
    deltas = []
    for ex_id, p in preds.items():
        for k in range(len(p.replies)):
            alt = dict(preds)
            alt[ex_id] = replace(p, replies=p.replies[:k] + p.replies[k + 1:])
            d = abs((_pauc(dataset, alt) or 0.0) - base)
            if d > 1e-9:
                deltas.append(d)
    return {"mean": round(sum(deltas) / len(deltas), 4) if deltas else 0.0,
            "max": round(max(deltas), 4) if deltas else 0.0, "replies": len(deltas)}


def _moved(bs: dict[float, str], ns: dict[float, str], t: float, turn_s: float) -> str:
    """"earlier"/"later" when the change at ``t`` is one reply said one turn earlier/later in the same words (and no
    longer at its old turn): the timing lesson of a ``late`` or ``missed`` correction applied to a like moment of
    another clip; "" for any other change."""
    def same(a: float, b: float) -> bool:
        a, b = round(a, 3), round(b, 3)
        return a in bs and b in ns and bs[a] == ns[b] and a not in ns and b not in bs

    if same(t, t - turn_s) or same(t + turn_s, t):
        return "earlier"
    if same(t, t + turn_s) or same(t - turn_s, t):
        return "later"
    return ""


def compare(dataset: Any, base: dict, new: dict, turn_s: float) -> dict[str, Any]:
    """Decisions and texts per turn, PAUC before/after and the noise of one reply (see the module docstring)."""
    decisions, texts, turns = [], [], 0
    for ex in dataset:
        b, n = base.get(ex.id), new.get(ex.id)
        if b is None or n is None:
            continue
        bs = {round(t, 3): s for t, s in b.replies}
        ns = {round(t, 3): s for t, s in n.replies}
        turns += max(b.n_turns, n.n_turns)
        for t in sorted(bs.keys() | ns.keys()):
            if (t in bs) != (t in ns):
                decisions.append({"clip": ex.id, "time": t, "base": bs.get(t, ""), "new": ns.get(t, ""),
                                  "moved": _moved(bs, ns, t, turn_s)})
            elif bs[t] != ns[t]:
                texts.append({"clip": ex.id, "time": t, "base": bs[t], "new": ns[t]})
    before, after = _pauc(dataset, base), _pauc(dataset, new)
    noise = one_reply_noise(dataset, base)
    fall = None if before is None or after is None else round(before - after, 4)
    return {"clips": len(dataset), "turns": turns, "decisions_changed": decisions, "texts_changed": texts,
            "decisions_unexplained": [d for d in decisions if not d["moved"]],
            "pauc_base": before, "pauc_new": after, "pauc_fall": fall, "one_reply_noise": noise,
            "within_noise": fall is None or noise["mean"] is None or fall <= noise["mean"] + 1e-9,
            "turn_s": turn_s}


def check_forgetting(cfg: Any, base_pair: tuple[Path, Path], new_pair: tuple[Path, Path]) -> dict[str, Any] | None:
    """Play both GGUF pairs on the held-out clips and compare; None when the recipe has no held-out clips."""
    from app.trainer.export import engine_predictions

    dataset = heldout_dataset(cfg)
    if not len(dataset):
        return None
    base = engine_predictions(*base_pair, dataset, cfg)
    new = engine_predictions(*new_pair, dataset, cfg)
    return compare(dataset, base, new, cfg.data.interval * cfg.data.frames_per_turn)
