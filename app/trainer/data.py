"""Proactive training dialogues: videos with timed answers → MMDuet2 chats → token ids and labels.

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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.core import protocol
from app.core.errors import InputError
from app.eval.dataset import DatasetError, Example, load_dataset

log = logging.getLogger("duet.trainer.data")


class DataError(InputError):
    """Training data is unusable; the message names the file, record and field (or the video)."""


@dataclass
class TurnFrames:
    time: float  # video time after this turn's frames
    images: list[np.ndarray]


@dataclass
class DialogueTurn:
    time: float
    images: list[np.ndarray]
    user_text: str = ""
    target: str = protocol.NO_REPLY
    train: bool = True


@dataclass
class Dialogue:
    id: str
    turns: list[DialogueTurn]
    system: str = protocol.SYSTEM_PROMPT
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_replies(self) -> int:
        return sum(1 for t in self.turns if t.target != protocol.NO_REPLY)


# ---------------------------------------------------------------------------------------------
# frames


def read_turn_frames(video: Path, interval: float, frames_per_turn: int, tokens_per_frame: int,
                     where: str = "") -> list[TurnFrames]:
    """The user turns' frames of one video, exactly as the evaluation runner feeds them."""
    from app.capture.base import CaptureError
    from app.capture.resize import fit_frame
    from app.eval.runner import video_source

    if not Path(video).is_file():
        raise DataError(f"{where}field 'video': file not found: {video}")
    turns: list[TurnFrames] = []
    pending: list[np.ndarray] = []
    try:
        with video_source(Path(video)) as src:
            for fr in src.sample(interval):
                pending.append(fit_frame(fr.image, tokens_per_frame))
                if len(pending) == frames_per_turn:
                    turns.append(TurnFrames(round(fr.time, 6), pending))
                    pending = []
    except (CaptureError, OSError, ValueError) as e:
        raise DataError(f"{where}field 'video': cannot read {video}: {e}") from e
    if not turns:
        raise DataError(f"{where}field 'video': {video} yields no complete turn "
                        f"({frames_per_turn} frames at {interval} s)")
    return turns


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
# the user's own sessions with feedback


def session_video(session: Any) -> Path:
    """The video file a saved session watched; live sources keep no frames, so they cannot train."""
    meta = session.meta
    video = meta.get("video")
    if not video:
        src = str(meta.get("source", ""))
        head, sep, rest = src.partition(":")
        video = rest if sep and head.lower() == "file" else src
    p = Path(str(video)).expanduser()
    if not video or not p.is_file():
        raise DataError(f"session {session.id}: it watched {meta.get('source', '?')!r}, which is not a video file "
                        "that still exists; only sessions of a video file can be trained on (Duet does not keep "
                        "the frames of a camera or screen)")
    return p


def session_dialogue(session: Any) -> Dialogue:
    """One saved session + its feedback → the dialogue the model should have had.

    Frames are re-read from the session's video with the session's own stream geometry (interval,
    frames per turn, tokens per frame from its meta), so the dialogue is what the model saw. Each
    step is matched to its turn by the video time of its last frame; the questions ride where they
    rode. Targets: what the model said, changed by the marks in force (``app.core.feedback.targets``:
    wrong → the correction, late → one turn earlier, redundant → NO REPLY, missed → the text there).
    """
    from dataclasses import replace as dc_replace

    from app.core import feedback as fbk
    from app.core.protocol import DEFAULT_TOKENS_PER_FRAME

    meta = session.meta
    where = f"session {session.id}: "
    try:
        interval = float(meta.get("interval", 1.0))
        fpt = int(meta.get("frames_per_turn", 2))
        tpf = int(meta.get("tokens_per_frame", DEFAULT_TOKENS_PER_FRAME))
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}meta.json: stream settings unreadable ({e})") from None
    frames = read_turn_frames(session_video(session), interval, fpt, tpf, where)
    times = [f.time for f in frames]
    said = [protocol.NO_REPLY] * len(frames)
    asked = [""] * len(frames)
    step_index: dict[int, int] = {}
    for st in session.steps:
        ft = st.get("frame_times") or []
        t = float(ft[-1]) if ft else float(st.get("time", 0.0))
        i = next((k for k, tt in enumerate(times) if abs(tt - t) < 1e-3), None)
        if i is None:
            continue  # a turn of a live-paced run that skipped frames: no equal turn in the re-read video
        step_index[int(st["turn"])] = i
        said[i] = protocol.NO_REPLY if st.get("silent") else str(st.get("text", "")).strip() or protocol.NO_REPLY
        asked[i] = st.get("question") or ""
    marks = []
    for m in session.marks:
        if m.turn is not None:  # a reply mark: place it at the turn its step was matched to
            if m.turn not in step_index:
                continue
            m = dc_replace(m, time=times[step_index[m.turn]],
                           to_time=None if m.to_time is None else min(m.to_time, times[step_index[m.turn]] - 1e-3))
        marks.append(m)
    targets = fbk.targets(times, said, marks)
    turns = [DialogueTurn(f.time, list(f.images), asked[i], targets[i]) for i, f in enumerate(frames)]
    touched = sorted({i for i in range(len(turns)) if targets[i] != said[i]}
                     | {step_index[m.turn] for m in marks if m.kind == "good" and m.turn in step_index})
    return Dialogue(f"session/{session.id}", turns, meta={"form": "feedback", "marks": len(marks),
                                                          "touched": touched})


def windows(d: Dialogue, window_turns: int) -> list[Dialogue]:
    """A long session cut into windows of ``window_turns`` turns; only those holding a mark are kept.

    Why: one dialogue is one forward pass, and an hour at 1 s is 1800 turns (≈ 480 k tokens at 128
    tokens a frame), far past any GPU; the engine itself forgets old turns as its context fills, so a
    window that starts with an empty history is a situation the model meets at inference too.
    """
    if window_turns <= 0 or len(d.turns) <= window_turns:
        return [d]
    touched = set(d.meta.get("touched", []))
    out = []
    for k in range(0, len(d.turns), window_turns):
        if touched & set(range(k, k + window_turns)):
            out.append(replace(d, id=f"{d.id}#w{k // window_turns}", turns=d.turns[k:k + window_turns]))
    return out


def load_session_dialogues(dirs: Iterable[str | Path], window_turns: int = 32) -> list[Dialogue]:
    """The dialogues of saved sessions (folders of the session store), long ones cut into windows."""
    from app.core.sessions import load_session

    out = []
    for d in dirs:
        p = Path(d)
        if not (p / "events.jsonl").is_file():
            raise DataError(f"{p}: not a saved session (no events.jsonl)")
        out += windows(session_dialogue(load_session(p)), window_turns)
    return out


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


def build_dialogues(examples: Iterable[Example], interval: float, frames_per_turn: int, tokens_per_frame: int,
                    nqna_fraction: float = 0.0, variants: int = 1, seed: int = 0) -> list[Dialogue]:
    """Every example's dialogue(s); frames are read once per video."""
    out: list[Dialogue] = []
    for k, ex in enumerate(examples):
        assert ex.video_path is not None
        frames = read_turn_frames(ex.video_path, interval, frames_per_turn, tokens_per_frame,
                                  f"record {ex.id!r}: ")
        for v in range(variants):
            rng = np.random.default_rng([seed, k, v])
            nqna = bool(rng.random() < nqna_fraction)
            out.append(dialogue_from_example(ex, frames, nqna=nqna, rng=rng))
    return out


# ---------------------------------------------------------------------------------------------
# tokens


@dataclass
class Encoded:
    """One dialogue as model inputs: ``labels`` is -100 everywhere but trained assistant tokens."""

    input_ids: Any  # LongTensor [T]
    labels: Any  # LongTensor [T]
    pixel_values: Any | None  # FloatTensor [patches, C·t·p·p]
    image_grid_thw: Any | None  # LongTensor [n_images, 3]
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each target

    @property
    def n_target_tokens(self) -> int:
        return int((self.labels != -100).sum())

    def model_inputs(self, image_token_id: int, device: Any = None) -> dict[str, Any]:
        import torch

        ids = self.input_ids.unsqueeze(0)
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                               "mm_token_type_ids": (ids == image_token_id).long()}
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
            out["image_grid_thw"] = self.image_grid_thw
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out


class Encoder:
    """Turns dialogues into token ids with the model's tokenizer and the PIL image processor.

    Text pieces are tokenized separately at turn boundaries; the Qwen2 split regex never merges
    across ``\\n`` or added tokens, so this equals tokenizing the whole rendered chat (checked in
    tests) while letting us mark the assistant tokens exactly.
    """

    def __init__(self, hf_dir: str | Path) -> None:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
        tid = self.tokenizer.convert_tokens_to_ids
        self.image_pad = tid(protocol.IMAGE_PAD)
        self.vision_start = tid(protocol.VISION_START)
        self.vision_end = tid(protocol.VISION_END)
        self.im_end = tid(protocol.IM_END)
        self._text_cache: dict[str, list[int]] = {}
        self._image_cache: dict[int, tuple[Any, Any, np.ndarray]] = {}

    def text_ids(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._text_cache) < 4096:
                self._text_cache[text] = ids
        return list(ids)

    def image(self, img: np.ndarray) -> tuple[Any, Any]:
        """(pixel_values [patches, dim], grid_thw [3]) of one fitted frame, cached by object identity."""
        hit = self._image_cache.get(id(img))
        if hit is not None and hit[2] is img:
            return hit[0], hit[1]
        from PIL import Image

        proc = self.image_processor(images=[Image.fromarray(img)], return_tensors="pt")
        pv, grid = proc["pixel_values"], proc["image_grid_thw"][0]
        self._image_cache[id(img)] = (pv, grid, img)  # keeps img alive, so the id stays unique
        return pv, grid

    def image_ids(self, grid: Any) -> list[int]:
        n = int(grid.prod()) // (self.image_processor.merge_size ** 2)
        return [self.vision_start] + [self.image_pad] * n + [self.vision_end]

    def encode(self, d: Dialogue, targets: Sequence[list[int] | None] | None = None) -> Encoded:
        """All turns of ``d``; ``targets[i]`` (token ids) overrides turn i's text (GRPO rollouts).

        A target given as ids is used verbatim (the sampled tokens, so log-probs are of what was
        sampled) and gets ``<|im_end|>`` appended unless it was cut at the length limit, in which
        case the ``<|im_end|>`` that the next prompt carries is not trained.
        """
        import torch

        ids: list[int] = []
        labels: list[int] = []
        pvs: list[Any] = []
        grids: list[Any] = []
        spans: list[tuple[int, int]] = []

        def add(toks: list[int], train: bool) -> None:
            ids.extend(toks)
            labels.extend(toks if train else [-100] * len(toks))

        add(self.text_ids(protocol.system_turn(d.system)), False)
        for i, turn in enumerate(d.turns):
            add(self.text_ids(f"{protocol.IM_START}user\n"), False)
            for img in turn.images:
                pv, grid = self.image(img)
                pvs.append(pv)
                grids.append(grid)
                add(self.image_ids(grid), False)
            add(self.text_ids(f"{turn.user_text}{protocol.IM_END}\n{protocol.IM_START}assistant\n"), False)
            start = len(ids)
            if targets is not None and targets[i] is not None:
                toks = list(targets[i] or [])
                closed = bool(toks) and toks[-1] == self.im_end
                add(toks, turn.train)
                if not closed:
                    add([self.im_end], False)
                spans.append((start, len(ids) - (0 if closed else 1)))
            else:
                add(self.text_ids(turn.target) + [self.im_end], turn.train)
                spans.append((start, len(ids)))
            add(self.text_ids("\n"), False)
        pixel_values = torch.cat(pvs) if pvs else None
        grid_thw = torch.stack(grids) if grids else None
        return Encoded(torch.tensor(ids), torch.tensor(labels), pixel_values, grid_thw, spans)

    def prompt(self, d: Dialogue, upto: int, replies: Sequence[list[int]]) -> Encoded:
        """The generation prompt for turn ``upto``: turns before it with ``replies`` (ids), then its user turn."""
        head = replace(d, turns=d.turns[: upto + 1])
        enc = self.encode(head, targets=[*replies, []])
        # drop the last turn's (empty) reply, its <|im_end|> and the "\n": end at "<|im_start|>assistant\n"
        cut = enc.assistant_spans[-1][0]
        enc.input_ids = enc.input_ids[:cut]
        enc.labels = enc.labels[:cut]
        enc.assistant_spans = enc.assistant_spans[:-1]
        return enc


@dataclass
class Sources:
    """Everything a stage trains and evaluates on, frames already read."""

    train: list[Example]
    feedback: list[Dialogue]
    heldout: Any  # app.eval.dataset.Dataset
    frames: dict[str, list[TurnFrames]]


def load_sources(cfg: Any, work_dir: Path) -> Sources:
    """Read (and for synthetic sets, generate once) the recipe's training and held-out data."""
    from app.eval.dataset import Dataset

    d = cfg.data
    train: list[Example] = []
    if d.train_synthetic is not None:
        train += load_examples(synthetic_dataset(d.train_synthetic, work_dir))
    for f in d.train_files:
        train += load_examples(f)
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


def training_dialogues(src: Sources, nqna_fraction: float, variants: int, seed: int, repeat: int = 1) -> list[Dialogue]:
    """Replay dialogues (datasets) + the sessions' dialogues, these ``repeat`` times (oversampled)."""
    out: list[Dialogue] = []
    for k, ex in enumerate(src.train):
        for v in range(variants):
            rng = np.random.default_rng([seed, k, v])
            out.append(dialogue_from_example(ex, src.frames[ex.id], nqna=bool(rng.random() < nqna_fraction), rng=rng))
    return out + list(src.feedback) * max(1, repeat)
