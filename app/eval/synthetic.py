"""Synthetic proactive videos: scripted visual events, questions at set times, templated gold answers.

Why: a real proactive benchmark needs real videos and an LLM judge; these need neither. Each video
is a short script of *one clear visual event per reply span* (a shape appears, changes colour,
moves, the number of shapes changes, a word is shown), so the answer is fully determined by the
pixels and can be written from a template ("A red circle appeared."). That makes an exact-match
judge valid, lets CI run ``duet eval`` end to end in seconds, and gives the trainer a task that a
0.5 M-parameter Qwen2.5-VL can actually learn (few distinct colours and shapes, one object per
event, large, on a plain or lightly noisy background).

Families (question → answer template):

* ``appear``: "Tell me when a new shape appears." → "A red circle appeared."
* ``colour``: "Tell me when the shape changes colour." → "The circle turned blue."
* ``move``: "Tell me when the shape moves." → "The square moved left."
* ``count``: "Tell me how many shapes there are whenever the number changes." → "There are 2 shapes."
* ``text``: "Tell me when a word appears on the screen." → "The word CAT appeared."

Difficulty: ``easy`` (1–2 events, black background, large objects, 8 s), ``medium`` (2–3 events,
noisy grey background, 10 s), ``hard`` (3–4 events, smaller objects, a grey distractor drifting
about, the question possibly asked at 1 s, count can also go down, 12 s).

Timing: events start at half-integer seconds, so frames sampled at whole seconds never straddle an
onset; reply span = [onset, onset + 3] (clipped to the video), related span = [onset, onset + 2],
mirroring ProactiveVideoQA's one-second grace; spans never overlap. Everything derives from
``numpy.random.SeedSequence([seed, family, difficulty, index])``: same arguments, same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from app.core.errors import InputError
from app.eval.dataset import Dataset, Example, GoldAnswer, UserText, load_dataset, write_dataset

FAMILIES: tuple[str, ...] = ("appear", "colour", "move", "count", "text")
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB, far apart in hue
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 255),
    "yellow": (250, 220, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
WORDS: tuple[str, ...] = ("CAT", "DOG", "SUN", "BOX", "CAR", "HAT", "PEN", "CUP")
QUESTIONS: dict[str, str] = {
    "appear": "Tell me when a new shape appears.",
    "colour": "Tell me when the shape changes colour.",
    "move": "Tell me when the shape moves.",
    "count": "Tell me how many shapes there are whenever the number changes.",
    "text": "Tell me when a word appears on the screen.",
}
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
GRID = (1 / 6, 1 / 2, 5 / 6)  # cell centres on a 3×3 grid, as fractions of the frame side
REPLY_S = 3.0  # reply span length after the onset
RELATED_S = 2.0
MOVE_S = 0.4  # a move animates over this long, finished before the next whole second
_LEVEL = {
    "easy": {"events": (1, 2), "size": 0.15, "noise": 0, "distractor": False, "duration": 8.0},
    "medium": {"events": (2, 3), "size": 0.13, "noise": 18, "distractor": False, "duration": 10.0},
    "hard": {"events": (3, 4), "size": 0.11, "noise": 24, "distractor": True, "duration": 12.0},
}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cell: tuple[int, int]  # column, row on the 3×3 grid


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...] = ()
    word: str = ""


@dataclass(frozen=True)
class Event:
    time: float  # onset, seconds
    scene: Scene  # what is on screen from the onset on
    answer: str


@dataclass
class SyntheticVideo:
    """A scripted video: renders any time deterministically, knows its gold answers."""

    id: str
    family: str
    difficulty: str
    seed: int
    duration: float
    size: int
    fps: float
    question_time: float
    initial: Scene
    events: list[Event]
    noise: int = 0
    distractor: bool = False
    obj_size: float = 0.15
    _background: np.ndarray | None = field(default=None, repr=False)

    @property
    def question(self) -> str:
        return QUESTIONS[self.family]

    def scene_at(self, t: float) -> tuple[Scene, Scene | None, float]:
        """(current scene, previous scene, seconds since the current one started)."""
        prev, cur, since = None, self.initial, t
        for ev in self.events:
            if ev.time <= t:
                prev, cur, since = cur, ev.scene, t - ev.time
        return cur, prev, since

    def background(self) -> np.ndarray:
        if self._background is None:
            n = self.size
            bg = np.zeros((n, n, 3), np.uint8)
            if self.noise:
                rng = np.random.default_rng(self.seed ^ 0x5EED)
                base = rng.integers(40, 70)
                grain = rng.integers(-self.noise, self.noise + 1, (n // 4 + 1, n // 4 + 1, 1))
                grain = np.kron(grain, np.ones((4, 4, 1), np.int64))[:n, :n]
                bg = np.clip(base + np.repeat(grain, 3, axis=2), 0, 255).astype(np.uint8)
            self._background = bg
        return self._background

    def frame_at(self, t: float) -> np.ndarray:
        """The RGB frame at video time ``t`` (H×W×3 uint8)."""
        img = self.background().copy()
        n = self.size
        if self.distractor:  # a grey disc drifting on a Lissajous path: motion that is never an event
            cx = int(n * (0.5 + 0.38 * math.sin(0.9 * t + self.seed % 7)))
            cy = int(n * (0.5 + 0.38 * math.sin(1.3 * t + self.seed % 5)))
            cv2.circle(img, (cx, cy), max(2, int(n * 0.05)), (150, 150, 150), -1, cv2.LINE_AA)
        scene, prev, since = self.scene_at(t)
        for i, shape in enumerate(scene.shapes):
            pos = self._centre(shape.cell)
            if self.family == "move" and prev is not None and since < MOVE_S and i < len(prev.shapes):
                a, b = np.array(self._centre(prev.shapes[i].cell)), np.array(pos)
                pos = tuple((a + (b - a) * since / MOVE_S).astype(int))
            self._draw(img, shape, pos)
        if scene.word:
            self._draw_word(img, scene.word)
        return img

    def _centre(self, cell: tuple[int, int]) -> tuple[int, int]:
        return int(GRID[cell[0]] * self.size), int(GRID[cell[1]] * self.size)

    def _draw(self, img: np.ndarray, shape: Shape, centre: tuple[int, int]) -> None:
        r = max(3, int(self.obj_size * self.size))
        colour = COLOURS[shape.colour]
        x, y = centre
        if shape.kind == "circle":
            cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
        elif shape.kind == "square":
            s = int(r * 0.85)
            cv2.rectangle(img, (x - s, y - s), (x + s, y + s), colour, -1)
        else:
            pts = np.array([(x, y - r), (x - r, y + int(r * 0.8)), (x + r, y + int(r * 0.8))], np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)

    def _draw_word(self, img: np.ndarray, word: str) -> None:
        n = self.size
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = n / 90
        thick = max(1, int(n / 40))
        (w, h), _ = cv2.getTextSize(word, font, scale, thick)
        cv2.putText(img, word, ((n - w) // 2, (n + h) // 2), font, scale, (255, 255, 255), thick, cv2.LINE_AA)

    def example(self, video: str) -> Example:
        """The gold record for this video (``video`` as it should be written in the dataset)."""
        answers = tuple(
            GoldAnswer(ev.answer, (ev.time, min(ev.time + REPLY_S, self.duration)),
                       (ev.time, min(ev.time + RELATED_S, self.duration)))
            for ev in self.events
        )
        return Example(
            id=self.id, video=video, questions=(UserText(self.question_time, self.question),), answers=answers,
            duration=self.duration, task=self.family,
            meta={"difficulty": self.difficulty, "seed": self.seed, "templated": True, "size": self.size,
                  "fps": self.fps},
        )

    def write(self, path: str | os.PathLike[str], codec: str = "MJPG") -> Path:
        """Encode with OpenCV's VideoWriter (MJPG .avi by default; ``mp4v`` for .mp4)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*codec), self.fps, (self.size, self.size))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {p} with codec {codec!r}")
        try:
            for i in range(int(round(self.duration * self.fps)) + 1):  # up to t = duration inclusive
                writer.write(cv2.cvtColor(self.frame_at(i / self.fps), cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        return p


# ---------------------------------------------------------------------------------------------
# scripting


def _onsets(rng: np.random.Generator, n: int, first: float, last: float, gap: float = REPLY_S) -> list[float]:
    """``n`` half-integer onsets in [first, last], at least ``gap`` apart (fewer if they do not fit)."""
    cands = [k + 0.5 for k in range(math.ceil(first - 0.5), math.floor(last - 0.5) + 1) if first <= k + 0.5 <= last]
    n = min(n, 1 + int((last - first) // gap)) if cands else 0
    for _ in range(200):
        pick = sorted(rng.choice(cands, size=n, replace=False).tolist()) if n else []
        if all(b - a >= gap for a, b in zip(pick, pick[1:], strict=False)):
            return pick
    return [cands[0] + i * gap for i in range(n)]  # evenly spaced always fits, given n's bound


def _plural(n: int) -> str:
    return f"There is {n} shape." if n == 1 else f"There are {n} shapes."


def _script(family: str, level: dict, rng: np.random.Generator, times: list[float]) -> tuple[Scene, list[Event]]:
    cells = [(c, r) for c in range(3) for r in range(3)]
    colours = list(COLOURS)
    events: list[Event] = []
    if family == "appear":
        free = [cells[i] for i in rng.permutation(len(cells))]
        scene = Scene()
        combos = [(k, c) for k in SHAPES for c in colours]
        order = rng.permutation(len(combos))  # no two appearances alike, so no two answers alike
        for t, j in zip(times, order[: len(times)], strict=True):
            kind, colour = combos[j]
            s = Shape(kind, colour, free.pop())
            scene = Scene(scene.shapes + (s,))
            events.append(Event(t, scene, f"A {s.colour} {s.kind} appeared."))
        return Scene(), events
    if family == "colour":
        cur = Shape(str(rng.choice(SHAPES)), str(rng.choice(colours)), (1, 1))
        initial = Scene((cur,))
        for t in times:
            new = str(rng.choice([c for c in colours if c != cur.colour]))
            cur = replace(cur, colour=new)
            events.append(Event(t, Scene((cur,)), f"The {cur.kind} turned {new}."))
        return initial, events
    if family == "move":
        cur = Shape(str(rng.choice(SHAPES)), str(rng.choice(colours)), (1, 1))
        initial = Scene((cur,))
        for t in times:
            options = [(d, (cur.cell[0] + dx, cur.cell[1] + dy)) for d, (dx, dy) in DIRECTIONS.items()
                       if 0 <= cur.cell[0] + dx < 3 and 0 <= cur.cell[1] + dy < 3]
            d, cell = options[int(rng.integers(len(options)))]
            cur = replace(cur, cell=cell)
            events.append(Event(t, Scene((cur,)), f"The {cur.kind} moved {d}."))
        return initial, events
    if family == "count":
        free = [cells[i] for i in rng.permutation(len(cells))]
        start = int(rng.integers(0, 2)) if level["distractor"] else 0
        shapes = [Shape(str(rng.choice(SHAPES)), str(rng.choice(colours)), free.pop()) for _ in range(start)]
        initial = Scene(tuple(shapes))
        for t in times:
            if level["distractor"] and len(shapes) >= 2 and rng.random() < 0.4:
                free.append(shapes.pop(int(rng.integers(len(shapes)))).cell)
            else:
                shapes.append(Shape(str(rng.choice(SHAPES)), str(rng.choice(colours)), free.pop()))
            events.append(Event(t, Scene(tuple(shapes)), _plural(len(shapes))))
        return initial, events
    if family == "text":
        words = [WORDS[i] for i in rng.permutation(len(WORDS))]
        for t in times:
            w = words.pop()
            events.append(Event(t, Scene(word=w), f"The word {w} appeared."))
        return Scene(), events
    raise InputError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")


def make_video(family: str, difficulty: str, index: int, seed: int = 0, size: int = 112, fps: float = 8.0,
               duration: float | None = None) -> SyntheticVideo:
    """One scripted video; deterministic in its arguments."""
    if family not in FAMILIES:
        raise InputError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if difficulty not in DIFFICULTIES:
        raise InputError(f"unknown difficulty {difficulty!r}; choose from {', '.join(DIFFICULTIES)}")
    if not 56 <= size <= 448:
        raise InputError(f"size must be within 56–448 px, got {size}")
    level = _LEVEL[difficulty]
    dur = float(duration or level["duration"])
    if dur < 5:
        raise ValueError(f"duration must be at least 5 s to hold one event and its reply span, got {dur}")
    ss = np.random.SeedSequence([seed, FAMILIES.index(family), DIFFICULTIES.index(difficulty), index])
    rng = np.random.default_rng(ss)
    q_time = float(rng.integers(0, 2)) if difficulty == "hard" else 0.0
    lo, hi = level["events"]
    times = _onsets(rng, int(rng.integers(lo, hi + 1)), q_time + 1.5, dur - RELATED_S)
    initial, events = _script(family, level, rng, times)
    return SyntheticVideo(
        id=f"{family}-{difficulty}-{index:03d}", family=family, difficulty=difficulty,
        seed=int(ss.generate_state(1)[0]), duration=dur, size=size, fps=fps, question_time=q_time,
        initial=initial, events=events, noise=level["noise"], distractor=level["distractor"],
        obj_size=level["size"],
    )


@dataclass
class SyntheticConfig:
    families: Sequence[str] = FAMILIES
    difficulties: Sequence[str] = ("easy",)
    per_family: int = 2  # videos per (family, difficulty)
    seed: int = 0
    size: int = 112
    fps: float = 8.0
    duration: float | None = None  # None: per difficulty (8/10/12 s)
    codec: str = "MJPG"  # MJPG → .avi, mp4v → .mp4


def generate(config: SyntheticConfig) -> list[SyntheticVideo]:
    """The scripted videos of a set, in a stable order, without touching the disk."""
    return [
        make_video(f, d, i, config.seed, config.size, config.fps, config.duration)
        for d in config.difficulties
        for f in config.families
        for i in range(config.per_family)
    ]


def make_synthetic(out_dir: str | os.PathLike[str], config: SyntheticConfig | None = None,
                   layouts: Sequence[str] = ("jsonl",)) -> Dataset:
    """Write the videos under ``out_dir/videos`` and ``dataset.jsonl`` (and/or ``dataset.json``, PVQA)."""
    config = config or SyntheticConfig()
    out = Path(out_dir)
    ext = ".mp4" if config.codec.lower() == "mp4v" else ".avi"
    videos = generate(config)
    examples = []
    for v in videos:
        rel = f"videos/{v.id}{ext}"
        v.write(out / rel, config.codec)
        examples.append(v.example(rel))
    first = None
    for layout in layouts:
        name = {"jsonl": "dataset.jsonl", "pvqa": "dataset.json"}[layout]
        path = write_dataset(examples, out / name, layout)
        first = first or path
    if first is None:
        raise ValueError("no layout given")
    return load_dataset(first)
