"""Evaluation datasets: one in-memory shape, two on-disk layouts, validation that names the culprit.

The in-memory unit is an :class:`Example`: one video, the user texts fed at set video times
(questions, subtitles), and the gold answer turns with their reply spans. It mirrors a
ProactiveVideoQA record (one ``question_id``), because PAUC is computed per record and the reference
driver runs the video once per record.

Layouts:

* **ProactiveVideoQA** (``*.json``, a JSON array; docs §3.1)::

    {"video", "question_id", "duration", "conversation": [{"role": "user", "time", "content"}],
     "answer": [{"role": "assistant", "content", "related_timespan": [a, b], "reply_timespan": [a, b]}]}

  The PAUC question is the first user turn's content, as in the reference judge.
* **Duet JSONL** (``*.jsonl``, one example a line)::

    {"id", "video", "duration", "task", "questions": [{"time", "text"}],
     "answers": [{"text", "reply_span": [a, b], "related_span": [a, b], "question": 0}], "meta": {}}

  ``question`` indexes ``questions`` (so several questions can share one video); ``related_span``
  is optional (without it the post-processing rule has nothing to compare against and is skipped).

Video paths are relative to the dataset file's folder unless absolute or a ``video_root`` is given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import InputError

MAX_REPORTED_ERRORS = 20


class DatasetError(InputError):
    """A dataset file or record is unusable; each line of the message names the record and field."""


@dataclass(frozen=True)
class UserText:
    time: float
    text: str


@dataclass(frozen=True)
class GoldAnswer:
    text: str
    reply_span: tuple[float, float]
    related_span: tuple[float, float] | None = None
    question: int = 0  # index into Example.questions: the question this answer is judged against
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Example:
    id: str
    video: str  # as written in the file
    questions: tuple[UserText, ...]
    answers: tuple[GoldAnswer, ...]
    duration: float | None = None
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    video_path: Path | None = field(default=None, compare=False)  # resolved on load

    def question_for(self, answer: GoldAnswer) -> str:
        return self.questions[answer.question].text


@dataclass
class Dataset:
    examples: list[Example]
    path: Path | None = None
    layout: str = "jsonl"  # "jsonl" | "pvqa"

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_turns(self) -> int:
        return sum(len(e.answers) for e in self.examples)

    def missing_videos(self) -> list[Example]:
        return [e for e in self.examples if e.video_path is None or not e.video_path.is_file()]

    def check_videos(self) -> None:
        """Raise one :class:`DatasetError` listing every record whose video file is absent."""
        missing = self.missing_videos()
        if missing:
            lines = [f"record {e.id!r}: field 'video': file not found: {e.video_path}" for e in missing]
            raise DatasetError(_summarise(f"{len(missing)} video(s) missing in {self.path}", lines))


# ---------------------------------------------------------------------------------------------
# validation helpers: each returns the value or appends a message naming the field


class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, field_name: str, msg: str) -> None:
        self.lines.append(f"{where}: field {field_name!r}: {msg}")


def _summarise(head: str, lines: list[str]) -> str:
    shown = lines[:MAX_REPORTED_ERRORS]
    more = len(lines) - len(shown)
    tail = [f"... and {more} more"] if more else []
    return "\n  ".join([head, *shown, *tail])


def _number(v: Any, where: str, name: str, errs: _Errors) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        errs.add(where, name, f"expected a finite number, got {v!r}")
        return None
    if v < 0:
        errs.add(where, name, f"expected a time >= 0, got {v!r}")
        return None
    return float(v)


def _text(v: Any, where: str, name: str, errs: _Errors, allow_empty: bool = False) -> str | None:
    if not isinstance(v, str) or (not allow_empty and not v.strip()):
        errs.add(where, name, f"expected a non-empty string, got {v!r}")
        return None
    return v


def _span(v: Any, where: str, name: str, errs: _Errors) -> tuple[float, float] | None:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        errs.add(where, name, f"expected [start, end], got {v!r}")
        return None
    a = _number(v[0], where, f"{name}[0]", errs)
    b = _number(v[1], where, f"{name}[1]", errs)
    if a is None or b is None:
        return None
    if b < a:
        errs.add(where, name, f"end {b} is before start {a}")
        return None
    return a, b


def _id_video_duration(rec: dict, id_value: Any, id_field: str, where: str,
                       errs: _Errors) -> tuple[str | None, str, str | None, float | None]:
    """The fields every layout has: the id (named in ``where`` from then on), the video, its duration."""
    ex_id = _text(id_value, where, id_field, errs)
    if ex_id is not None:
        where = f"{where} ({id_field} {ex_id!r})"
    video = _text(rec.get("video"), where, "video", errs)
    duration = _number(rec["duration"], where, "duration", errs) if rec.get("duration") is not None else None
    return ex_id, where, video, duration


def _objects(raw: Any, where: str, field: str, errs: _Errors, *, expected: str, item: str,
             nonempty: bool) -> Iterator[tuple[str, dict]]:
    """The objects of a list field as (name, object); a wrong list or entry is recorded in ``errs`` and skipped."""
    if not isinstance(raw, list) or (nonempty and not raw):
        errs.add(where, field, f"expected {expected}, got {raw!r}")
        return
    for i, x in enumerate(raw):
        name = f"{field}[{i}]"
        if not isinstance(x, dict):
            errs.add(where, name, f"expected {item}")
            continue
        yield name, x


def _answer_fields(a: dict, where: str, name: str, errs: _Errors, text_key: str, span_key: str,
                   related_key: str) -> tuple[str | None, tuple[float, float] | None, tuple[float, float] | None]:
    """An answer's text, reply span and optional related span, under the field names of its layout."""
    txt = _text(a.get(text_key), where, f"{name}.{text_key}", errs)
    span = _span(a.get(span_key), where, f"{name}.{span_key}", errs)
    related = _span(a[related_key], where, f"{name}.{related_key}", errs) if a.get(related_key) is not None else None
    return txt, span, related


def _resolve(video: str, base: Path | None, video_root: Path | None) -> Path:
    p = Path(video).expanduser()
    if p.is_absolute():
        return p
    if video_root is not None:
        return video_root / p
    return (base or Path.cwd()) / p


# ---------------------------------------------------------------------------------------------
# Duet JSONL


def _example_from_jsonl(rec: Any, where: str, errs: _Errors) -> Example | None:
    if not isinstance(rec, dict):
        errs.add(where, "<record>", f"expected a JSON object, got {type(rec).__name__}")
        return None
    n0 = len(errs.lines)
    ex_id, where, video, duration = _id_video_duration(rec, rec.get("id"), "id", where, errs)
    qs_raw = rec.get("questions")
    questions: list[UserText] = []
    for name, q in _objects(qs_raw, where, "questions", errs, expected="a non-empty list",
                            item="an object with 'time' and 'text'", nonempty=True):
        t = _number(q.get("time"), where, f"{name}.time", errs)
        txt = _text(q.get("text"), where, f"{name}.text", errs)
        if t is not None and txt is not None:
            questions.append(UserText(t, txt))
    answers: list[GoldAnswer] = []
    for name, a in _objects(rec.get("answers"), where, "answers", errs, expected="a list",
                            item="an object with 'text' and 'reply_span'", nonempty=False):
        txt, span, related = _answer_fields(a, where, name, errs, "text", "reply_span", "related_span")
        qi = a.get("question", 0)
        if isinstance(qi, bool) or not isinstance(qi, int) or not 0 <= qi < max(len(qs_raw or []), 1):
            errs.add(where, f"{name}.question", f"expected an index into 'questions', got {qi!r}")
            continue
        if txt is not None and span is not None:
            meta = {k: v for k, v in a.items() if k not in ("text", "reply_span", "related_span", "question")}
            answers.append(GoldAnswer(txt, span, related, qi, meta))
    if len(errs.lines) > n0 or ex_id is None or video is None:
        return None
    task = rec.get("task") or ""
    meta = rec.get("meta") or {}
    if not isinstance(task, str):
        errs.add(where, "task", f"expected a string, got {task!r}")
        return None
    if not isinstance(meta, dict):
        errs.add(where, "meta", f"expected an object, got {meta!r}")
        return None
    return Example(ex_id, video, tuple(questions), tuple(answers), duration, task, dict(meta))


def _example_to_jsonl(ex: Example) -> dict[str, Any]:
    return {
        "id": ex.id,
        "video": ex.video,
        "duration": ex.duration,
        "task": ex.task,
        "questions": [{"time": q.time, "text": q.text} for q in ex.questions],
        "answers": [
            {"text": a.text, "reply_span": list(a.reply_span),
             **({"related_span": list(a.related_span)} if a.related_span else {}),
             "question": a.question, **a.meta}
            for a in ex.answers
        ],
        "meta": ex.meta,
    }


# ---------------------------------------------------------------------------------------------
# ProactiveVideoQA


def _example_from_pvqa(rec: Any, where: str, errs: _Errors) -> Example | None:
    if not isinstance(rec, dict):
        errs.add(where, "<record>", f"expected a JSON object, got {type(rec).__name__}")
        return None
    n0 = len(errs.lines)
    qid = rec.get("question_id")
    if isinstance(qid, (int, float)) and not isinstance(qid, bool):
        qid = str(qid)
    ex_id, where, video, duration = _id_video_duration(rec, qid, "question_id", where, errs)
    questions: list[UserText] = []
    for name, turn in _objects(rec.get("conversation"), where, "conversation", errs,
                               expected="a non-empty list of user turns", item="an object", nonempty=True):
        if turn.get("role", "user") != "user":
            continue  # the reference file has only user turns here; anything else is not model input
        t = _number(turn.get("time", 0), where, f"{name}.time", errs)
        txt = _text(turn.get("content"), where, f"{name}.content", errs)
        if t is not None and txt is not None:
            questions.append(UserText(t, txt))
    if not questions and len(errs.lines) == n0:  # a list of turns, none of them the user's
        errs.add(where, "conversation", "has no user turn (the first one is the question)")
    answers: list[GoldAnswer] = []
    for name, a in _objects(rec.get("answer"), where, "answer", errs, expected="a list", item="an object",
                            nonempty=False):
        txt, span, related = _answer_fields(a, where, name, errs, "content", "reply_timespan", "related_timespan")
        if txt is not None and span is not None:
            meta = {k: v for k, v in a.items() if k not in ("role", "content", "reply_timespan", "related_timespan")}
            answers.append(GoldAnswer(txt, span, related, 0, meta))
    if len(errs.lines) > n0 or ex_id is None or video is None:
        return None
    known = {"video", "question_id", "duration", "conversation", "answer"}
    meta = {k: v for k, v in rec.items() if k not in known}
    task = str(rec.get("tag") or rec.get("dataset_name") or "")
    return Example(ex_id, video, tuple(questions), tuple(answers), duration, task, meta)


def _example_to_pvqa(ex: Example) -> dict[str, Any]:
    if any(a.question != 0 for a in ex.answers):
        raise DatasetError(
            f"record {ex.id!r}: field 'answers': ProactiveVideoQA judges every answer against the first "
            "question; split this record into one record per question to write it in that layout")
    rec: dict[str, Any] = {
        "video": ex.video,
        "question_id": ex.id,
        "duration": ex.duration,
        "conversation": [{"role": "user", "time": q.time, "content": q.text} for q in ex.questions],
        "answer": [
            {"role": "assistant", "content": a.text,
             "related_timespan": list(a.related_span or a.reply_span),
             "reply_timespan": list(a.reply_span), **a.meta}
            for a in ex.answers
        ],
    }
    if ex.task:
        rec["tag"] = ex.task
    rec.update({k: v for k, v in ex.meta.items() if k not in rec})
    return rec


# ---------------------------------------------------------------------------------------------
# public API


def detect_layout(path: Path) -> str:
    """``jsonl`` for ``*.jsonl`` files, ``pvqa`` for ``*.json`` files (a JSON array)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "pvqa"
    raise DatasetError(f"{path}: unknown dataset layout; expected a .jsonl (Duet) or .json (ProactiveVideoQA) file")


def resolve_dataset_path(path: str | os.PathLike[str]) -> Path:
    """A dataset file, or a folder holding ``dataset.jsonl`` (what ``make-synthetic`` writes)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("dataset.jsonl", "dataset.json"):
            if (p / name).is_file():
                return p / name
        raise DatasetError(f"{p}: folder has no dataset.jsonl or dataset.json")
    if not p.is_file():
        raise DatasetError(f"{p}: dataset file not found")
    return p


def load_dataset(path: str | os.PathLike[str], video_root: str | os.PathLike[str] | None = None) -> Dataset:
    """Read and validate a dataset; raise :class:`DatasetError` listing every bad record and field.

    Video existence is *not* checked here (call :meth:`Dataset.check_videos`), so gold files can be
    scored without the videos at hand.
    """
    p = resolve_dataset_path(path)
    layout = detect_layout(p)
    root = Path(video_root).expanduser() if video_root is not None else None
    errs = _Errors()
    examples: list[Example] = []
    try:
        raw_text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: cannot read: {e}") from e
    if layout == "jsonl":
        for n, line in enumerate(raw_text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{p.name} line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                errs.lines.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
                continue
            ex = _example_from_jsonl(rec, where, errs)
            if ex is not None:
                examples.append(ex)
    else:
        try:
            data = json.loads(raw_text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise DatasetError(f"{p}: expected a JSON array of ProactiveVideoQA records")
        for i, rec in enumerate(data):
            ex = _example_from_pvqa(rec, f"{p.name} record {i}", errs)
            if ex is not None:
                examples.append(ex)
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.id in seen:
            errs.lines.append(f"record {ex.id!r}: field 'id': duplicate id (also record {seen[ex.id]})")
        seen[ex.id] = i
    if errs.lines:
        raise DatasetError(_summarise(f"{p}: {len(errs.lines)} problem(s)", errs.lines))
    if not examples:
        raise DatasetError(f"{p}: no records")
    base = p.parent
    resolved = [_with_path(ex, _resolve(ex.video, base, root)) for ex in examples]
    return Dataset(resolved, p, layout)


def _with_path(ex: Example, path: Path) -> Example:
    from dataclasses import replace

    return replace(ex, video_path=path)


def write_dataset(examples: Iterable[Example], path: str | os.PathLike[str], layout: str | None = None) -> Path:
    """Write examples in the layout named by ``layout`` or by the file suffix (atomic replace)."""
    p = Path(path)
    layout = layout or detect_layout(p)
    exs = list(examples)
    if layout == "jsonl":
        text = "".join(json.dumps(_example_to_jsonl(e), ensure_ascii=False) + "\n" for e in exs)
    elif layout == "pvqa":
        text = json.dumps([_example_to_pvqa(e) for e in exs], ensure_ascii=False, indent=1) + "\n"
    else:
        raise DatasetError(f"unknown layout {layout!r}; expected 'jsonl' or 'pvqa'")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p
