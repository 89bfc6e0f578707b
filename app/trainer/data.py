"""Proactive training dialogues: videos with timed answers → MMDuet2 chats (turns, frames, targets).

The one rule that matters (docs/protocol.md §1, §2.2): a training dialogue must be *byte for byte* what
the model sees at inference. So frames come from the same reader the evaluation uses
(``VideoFileSource(realtime=False)``: frames at t = interval, 2·interval, …), are resized with
``fit_frame`` at the inference token budget, grouped ``frames_per_turn`` to a user turn whose video
time is that of its last frame, questions ride in the first user turn whose time reaches them
(``ProactiveSession.ask(at=…)`` semantics), images come before text, and the chat strings are those
of ``app.core.protocol``.

Targets (§2.2): each answer sits in the assistant turn at the END of its reply span, i.e. the last
turn whose time is inside the span (among turns that have already shown a frame at or after the
span start); every other assistant turn is ``NO REPLY``. Loss covers every assistant turn's tokens
and its ``<|im_end|>`` (silence is learned too), nothing else.

Two dialogue forms (§2.1): 1QnA keeps the questions where the data puts them; nQnA re-times each
question to a random turn and opens with an "immediate answer" that summarises what the question's
earlier answers said (we have no LLM to summarise, so the summary is the earlier answers joined).

Dialogues become token ids and labels in :mod:`app.trainer.encode`; the user's saved sessions with
feedback become dialogues in :mod:`app.trainer.session_dialogues`; the dialogue types and the frame
reader they share are :mod:`app.trainer.dialogue`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.core import protocol
from app.eval.dataset import Dataset, DatasetError, Example, load_dataset
from app.trainer.dialogue import DataError, Dialogue, DialogueTurn, TurnFrames, read_turn_frames

log = logging.getLogger("duet.trainer.data")


# ---------------------------------------------------------------------------------------------
# targets


def answer_turn(times: Sequence[float], span: tuple[float, float]) -> int | None:
    """Index of the turn that carries an answer with reply span ``span`` (END placement).

    The last turn with ``s <= time <= e``; since a turn's time is its last frame's time, every such
    turn has seen a frame at or after ``s``. If no turn falls in the span (span shorter than a
    turn), the first turn after ``s``: late, but never before the event is visible.
    """
    s, e = span
    inside = [i for i, t in enumerate(times) if s - 1e-9 <= t <= e + 1e-9]
    if inside:
        return inside[-1]
    after = [i for i, t in enumerate(times) if t >= s - 1e-9]
    return after[0] if after else None


def question_turn(times: Sequence[float], at: float) -> int | None:
    """First turn whose video time reaches ``at`` (the session's ``ask(at=…)`` rule)."""
    return next((i for i, t in enumerate(times) if at <= t + 1e-9), None)


_WARNED_LATE: set[str] = set()


def dialogue_from_example(ex: Example, frames: Sequence[TurnFrames], nqna: bool = False,
                          rng: np.random.Generator | None = None) -> Dialogue:
    """Build the chat for one example; ``nqna`` re-times the questions (see the module docstring)."""
    times = [f.time for f in frames]
    q_times = [q.time for q in ex.questions]
    if nqna:
        rng = rng or np.random.default_rng(0)
        q_times = [float(times[int(rng.integers(0, max(1, len(times) - 1)))]) for _ in ex.questions]
    q_turns = [question_turn(times, t) for t in q_times]
    user_texts: dict[int, list[str]] = {}
    for qi, ti in enumerate(q_turns):
        if ti is not None:
            user_texts.setdefault(ti, []).append(ex.questions[qi].text)
    answers: dict[int, list[str]] = {}
    dropped = 0
    for a in ex.answers:
        ti = answer_turn(times, a.reply_span)
        qt = q_turns[a.question] if a.question < len(q_turns) else None
        if ti is None or qt is None:
            dropped += 1
            continue
        ti = max(ti, qt)  # an answer seen before its question was asked joins the immediate answer
        answers.setdefault(ti, []).append(a.text)
    late_q = sum(t is None for t in q_turns)
    if (dropped or late_q) and not nqna and ex.id not in _WARNED_LATE:
        _WARNED_LATE.add(ex.id)
        end = times[-1] if times else 0.0
        log.warning("record %r: %d answer(s) and %d question(s) fall after the video's last turn (%.1f s) and are "
                    "left out of training; check their timestamps and the video", ex.id, dropped, late_q, end)
    turns = [
        DialogueTurn(f.time, list(f.images), " ".join(user_texts.get(i, [])),
                     " ".join(answers[i]) if i in answers else protocol.NO_REPLY)
        for i, f in enumerate(frames)
    ]
    return Dialogue(ex.id + ("#nqna" if nqna else ""), turns, meta={"form": "nqna" if nqna else "1qna"})


# ---------------------------------------------------------------------------------------------
# datasets from a recipe


def load_examples(path: str | Path) -> list[Example]:
    try:
        ds = load_dataset(path)
        ds.check_videos()
    except DatasetError as e:
        raise DataError(str(e)) from None
    return list(ds)


def synthetic_dataset(src: Any, out_dir: Path) -> Path:
    """Generate (once, cached by its settings) a synthetic set; returns its dataset.jsonl."""
    from app.eval.synthetic import SyntheticConfig, make_synthetic

    key = f"syn-{'_'.join(src.families)}-{'_'.join(src.difficulties)}-{src.per_family}-{src.seed}-{src.size}"
    folder = out_dir / key
    ds = folder / "dataset.jsonl"
    if not ds.is_file():
        tmp = folder.with_name(folder.name + ".partial")
        make_synthetic(tmp, SyntheticConfig(families=tuple(src.families), difficulties=tuple(src.difficulties),
                                             per_family=src.per_family, seed=src.seed, size=src.size))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
    return ds


@dataclass
class Sources:
    """Everything a stage trains and evaluates on, frames already read."""

    train: list[Example]
    feedback: list[Dialogue]
    heldout: Dataset
    frames: dict[str, list[TurnFrames]]


def load_sources(cfg: Any, work_dir: Path) -> Sources:
    """Read (and for synthetic sets, generate once) the recipe's training and held-out data."""
    d = cfg.data
    train: list[Example] = []
    if d.train_synthetic is not None:
        train += load_examples(synthetic_dataset(d.train_synthetic, work_dir))
    for f in d.train_files:
        train += load_examples(f)
    from app.trainer.session_dialogues import load_session_dialogues

    feedback = load_session_dialogues(d.sessions, d.window_turns)
    held: list[Example] = []
    if d.heldout_synthetic is not None:
        held += load_examples(synthetic_dataset(d.heldout_synthetic, work_dir))
    for f in d.heldout_files:
        held += load_examples(f)
    # Synthetic sets number their videos per family, so train and held-out ids collide: prefix.
    held = [replace(ex, id=f"heldout/{ex.id}") for ex in held]
    if not train and not feedback:
        raise DataError(f"{cfg.path}: no training data (data.train_synthetic, data.train_files, data.sessions)")
    frames: dict[str, list[TurnFrames]] = {}
    for ex in [*train, *held]:
        if ex.id in frames:
            raise DataError(f"record {ex.id!r}: field 'id': used by two examples (train and held-out ids must differ)")
        assert ex.video_path is not None
        frames[ex.id] = read_turn_frames(ex.video_path, d.interval, d.frames_per_turn, d.tokens_per_frame,
                                         f"record {ex.id!r}: ")
    return Sources(train, feedback, Dataset(held), frames)


def heldout_subset(src: Sources, limit: int) -> Dataset:
    """What a stage evaluates on (``eval_limit``) and export checks parity on: the first ``limit`` held-out
    examples, all of them when ``limit`` is 0 (a few clips keep a periodic evaluation cheap)."""
    exs = list(src.heldout)
    return Dataset(exs[:limit] if limit else exs)


def training_dialogues(src: Sources, nqna_fraction: float, variants: int, seed: int, repeat: int = 1) -> list[Dialogue]:
    """Replay dialogues (datasets) + the sessions' dialogues, these ``repeat`` times (oversampled)."""
    out: list[Dialogue] = []
    for k, ex in enumerate(src.train):
        for v in range(variants):
            rng = np.random.default_rng([seed, k, v])
            out.append(dialogue_from_example(ex, src.frames[ex.id], nqna=bool(rng.random() < nqna_fraction), rng=rng))
    return out + list(src.feedback) * max(1, repeat)
