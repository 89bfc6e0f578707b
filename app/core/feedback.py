"""The one feedback schema: what a user says about a session, and what it means for training.

Every writer (the chat's buttons, the Sessions page, ``duet sessions feedback``) and every reader
(the Markdown/JSON export, ``duet train feedback``, the Train page) goes through this module, so the
kinds below are the only ones that exist. ``docs/feedback.md`` is the user-facing description.

Kinds (``KINDS``):

* ``late``      — the reply came too late: train it one turn earlier (or at ``to_time`` when given).
* ``missed``    — nothing was said, but ``text`` should have been said at video time ``time``.
* ``redundant`` — the reply should not have been said: train ``NO REPLY`` at that turn.
* ``wrong``     — the reply is wrong: train ``text`` (the correction) there, or ``NO REPLY`` when the
                  user gave no correction (saying nothing beats saying something false).
* ``good``      — the reply was right: kept as a target (and counted, so "good" sessions are used).

A record in a session's ``events.jsonl`` (version 2)::

    {"type": "feedback", "v": 2, "kind": "wrong", "turn": 7, "time": 16.0, "text": "A red star.",
     "to_time": null, "on": true, "wall": 1764240000.0}

Records are appended, never rewritten; the *last* record for a target (a reply's turn and kind, or
for ``missed`` its time) wins, so ``on: false`` withdraws a mark. Version-1 records (before this
schema: ``{"type": "feedback", "turn", "kind", "on", "note"}`` with no time) are read as version 2
with the time taken from the step they name; the trainer's old ``should_speak`` kind reads as
``missed``. Nothing on disk is rewritten by the migration, so an older Duet can still read its files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.core.errors import InputError
from app.core.protocol import NO_REPLY

SCHEMA_VERSION = 2
# The longest correction (or "what should have been said") a mark may hold. A turn's reply is at most
# max_new_tokens (128 by default, ≈ 500 characters); a correction is trained as that reply, so 1,000
# characters is room for any reply and a half. A 120 KB correction made one training step take 374 s
# (and a SIGTERM land ~200 s late); the same cap applies where training data is built from sessions.
MAX_TEXT_CHARS = 1000

# kind → the label the UI shows (the chat's buttons, the exports)
KINDS: dict[str, str] = {
    "late": "should have spoken earlier",
    "missed": "should have said something",
    "redundant": "redundant",
    "wrong": "wrong",
    "good": "good",
}
# kinds that are about a reply the model gave (``missed`` is about a moment, not a reply)
REPLY_KINDS = ("late", "redundant", "wrong", "good")
# older names still found on disk → their kind now
LEGACY_KINDS = {"should_speak": "missed"}


class FeedbackError(InputError):
    """A feedback record or request that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Feedback:
    """One mark on a session (see the module docstring for what each kind trains)."""

    kind: str
    time: float  # video time, seconds: of the reply (reply kinds) or of the moment (missed)
    turn: int | None = None  # the reply's turn; None for ``missed``
    text: str = ""  # the correction (wrong) or what should have been said (missed)
    to_time: float | None = None  # late: when it should have been said (None = one turn earlier)
    on: bool = True
    wall: float = 0.0

    def __post_init__(self) -> None:
        validate(self)

    @property
    def key(self) -> tuple:
        """What a later record replaces: one mark per reply and kind, one ``missed`` per moment."""
        if self.kind == "missed":
            return ("missed", round(self.time, 3))
        return (self.kind, self.turn)

    def to_record(self) -> dict:
        return {"type": "feedback", "v": SCHEMA_VERSION, "kind": self.kind, "turn": self.turn,
                "time": round(self.time, 3), "text": self.text, "to_time": self.to_time, "on": self.on,
                "wall": self.wall}

    def describe(self) -> str:
        label = KINDS[self.kind]
        if self.kind in ("wrong", "missed") and self.text:
            return f"{label}: “{self.text}”"
        if self.kind == "late" and self.to_time is not None:
            return f"{label} (at {self.to_time:g} s)"
        return label


def validate(fb: Feedback) -> None:
    if fb.kind not in KINDS:
        raise FeedbackError(f"unknown feedback {fb.kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(fb.time, (int, float)) or not math.isfinite(fb.time) or fb.time < 0:
        raise FeedbackError(f"feedback time must be a video time in seconds ≥ 0, got {fb.time!r}")
    if fb.kind == "missed":
        if fb.on and not fb.text.strip():
            raise FeedbackError("'missed' needs the text that should have been said (--correction TEXT)")
    elif fb.turn is None:
        raise FeedbackError(f"{fb.kind!r} is about a reply: it needs the reply's turn")
    if fb.kind in ("late", "redundant", "good") and fb.text.strip():
        raise FeedbackError(f"{fb.kind!r} takes no text (a correction belongs to 'wrong' or 'missed')")
    if fb.to_time is not None and (fb.kind != "late" or not 0 <= fb.to_time < fb.time):
        raise FeedbackError("to_time is only for 'late' and must be a video time ≥ 0 before the reply's time")
    if not isinstance(fb.text, str) or _surrogate(fb.text):
        raise FeedbackError("feedback text must be valid UTF-8 text (it holds bytes that are not)")
    if len(fb.text) > MAX_TEXT_CHARS:
        raise FeedbackError(too_long("a correction", len(fb.text)))


def too_long(what: str, n: int) -> str:
    """The message for a text over :data:`MAX_TEXT_CHARS`, with the cap and why."""
    return (f"{what} may be at most {MAX_TEXT_CHARS:,} characters (what the model says in one turn), and this "
            f"one has {n:,}; write the sentence or two the model should have said")


def _surrogate(text: str) -> bool:
    """Whether ``text`` holds lone surrogates (bytes from a command line that were not UTF-8): unsavable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def from_record(rec: dict, step_times: dict[int, float] | None = None) -> Feedback:
    """A stored record (version 1 or 2) → :class:`Feedback`; raises FeedbackError if unusable."""
    kind = LEGACY_KINDS.get(rec.get("kind"), rec.get("kind"))  # type: ignore[arg-type]
    turn = rec.get("turn")
    if turn is not None:
        if isinstance(turn, bool) or not isinstance(turn, (int, float)):
            raise FeedbackError(f"feedback record: 'turn' must be an integer, got {turn!r}")
        turn = int(turn)
    t = rec.get("time")
    if t is None:  # version 1: the time is that of the step it names
        if turn is None or step_times is None or turn not in step_times:
            raise FeedbackError(f"feedback record on turn {turn!r}: no such step to take its time from")
        t = step_times[turn]
    text = rec.get("text")
    if text is None:
        text = rec.get("correction") or ""
    if not isinstance(text, str):
        raise FeedbackError("feedback record: 'text' must be a string")
    to_time = rec.get("to_time")
    try:
        return Feedback(kind=str(kind), time=float(t), turn=turn, text=text.strip(),
                        to_time=None if to_time is None else float(to_time), on=bool(rec.get("on", True)),
                        wall=float(rec.get("wall", 0.0) or 0.0))
    except (TypeError, ValueError) as e:
        raise FeedbackError(f"feedback record {rec!r}: {e}") from None


def current(records: Iterable[Feedback]) -> list[Feedback]:
    """The marks in force: the last record per target, withdrawn ones (``on: false``) dropped."""
    last: dict[tuple, Feedback] = {}
    for fb in records:
        last.pop(fb.key, None)  # re-insert so the order is that of the latest change
        last[fb.key] = fb
    return sorted((fb for fb in last.values() if fb.on), key=lambda f: (f.time, f.kind))


def nearest_reply(steps: Sequence[dict], at: float) -> dict | None:
    """The reply (non-silent step) at or nearest video time ``at`` (ties: the earlier one)."""
    replies = [s for s in steps if not s.get("silent")]
    if not replies:
        return None
    return min(replies, key=lambda s: (abs(float(s.get("time", 0.0)) - at), float(s.get("time", 0.0))))


def make(kind: str, at: float, steps: Sequence[dict], *, text: str = "", to_time: float | None = None,
         on: bool = True, wall: float = 0.0) -> Feedback:
    """Feedback given at video time ``at`` (what ``duet sessions feedback --at`` does).

    Reply kinds attach to the reply at or nearest ``at``; ``missed`` needs no reply.
    """
    kind = LEGACY_KINDS.get(kind, kind)
    if kind not in KINDS:
        raise FeedbackError(f"unknown feedback {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "missed":
        return Feedback("missed", float(at), None, text.strip(), None, on, wall)
    step = nearest_reply(steps, at)
    if step is None:
        raise FeedbackError(f"'{kind}' is about a reply, and this session has no reply; "
                            "use --kind missed --correction TEXT to say what it should have said")
    return Feedback(kind, float(step.get("time", 0.0)), int(step["turn"]), text.strip(), to_time, on, wall)


def targets(turn_times: Sequence[float], said: Sequence[str], marks: Iterable[Feedback]) -> list[str]:
    """What each turn should say, given what the model said and the marks in force.

    ``turn_times[i]`` is turn i's video time, ``said[i]`` the model's text there (``NO REPLY`` when
    silent). Unmarked turns keep what the model said (the user let it stand). Applied in an order
    that makes the result independent of the marks' order: first removals (redundant, wrong without
    text), then moves (late), then additions (wrong with text, missed). A turn with two texts joins
    them, as the dataset builder does for two answers in one turn.
    """
    out = list(said)
    if len(out) != len(turn_times):
        raise ValueError("turn_times and said must have the same length")

    def at_or_after(t: float) -> int | None:
        return next((i for i, tt in enumerate(turn_times) if tt >= t - 1e-6), None)

    def of_reply(fb: Feedback) -> int | None:
        i = at_or_after(fb.time)
        return i if i is not None and abs(turn_times[i] - fb.time) < 1e-3 else None

    marks = list(marks)
    adds: list[tuple[int, str]] = []
    for fb in marks:
        i = of_reply(fb) if fb.kind != "missed" else None
        if fb.kind == "redundant" and i is not None:
            out[i] = NO_REPLY
        elif fb.kind == "wrong" and i is not None:
            out[i] = NO_REPLY
            if fb.text:
                adds.append((i, fb.text))
        elif fb.kind == "late" and i is not None:
            text = said[i]
            out[i] = NO_REPLY
            if fb.to_time is not None:
                j = at_or_after(fb.to_time)
            else:
                j = max(0, i - 1)
            adds.append((j if j is not None else i, text))
    for fb in marks:
        if fb.kind == "missed":
            j = at_or_after(fb.time)
            if j is not None:
                adds.append((j, fb.text))
    for i, text in adds:
        out[i] = text if out[i] == NO_REPLY else f"{out[i]} {text}"
    return out
