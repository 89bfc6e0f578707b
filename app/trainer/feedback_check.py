"""Whether a model does what the user's marks ask, checked by playing their sessions through the real engine.

``duet train feedback`` uses this twice: before training, with the base model (a run whose marks the
base already satisfies is refused: nothing to learn), and after each round of training, with the
exported GGUF (a correction counts as learned only when the model the user will run says it).

A mark becomes one :class:`Check`:

* ``wrong`` with a correction: the correction is said at the reply's turn or the turn after it;
* ``missed``: its text is said at the first turn whose video time reaches the mark's time, or the turn after;
* ``late``: the reply's text is said before the reply's own turn, from the turn it was moved to
  (one turn earlier, or ``to_time``) on;
* ``good``: the reply is still said at its turn (the user let it stand; training must not lose it);
* ``redundant`` and ``wrong`` without a correction: silence at the reply's turn.

"Said" means the same words after :func:`app.core.text.normalise` (lower case, punctuation and spacing
ignored): "a crimson kite, drifting!" equals "A crimson kite drifting". No judge decides that a
paraphrase means the same; a reply that holds the correction among other sentences is not counted.

The session is replayed as it was watched: its video file read in evaluation mode (every frame, never
paced by the clock), its stream geometry and talkativeness from its ``meta.json``, each question asked
at the video time it was asked, greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.core.text import normalise


@dataclass(frozen=True)
class Replay:
    """How a saved session is played again: the video, its settings and its questions."""

    session: str
    video: Path
    interval: float
    frames_per_turn: int
    tokens_per_frame: int
    talkativeness: float
    questions: tuple[tuple[float, str], ...]  # (video time, text)

    @property
    def turn_s(self) -> float:
        return self.interval * self.frames_per_turn


@dataclass(frozen=True)
class Check:
    """What one mark asks of the model: ``text`` said (or silence, ``text`` empty) within [lo, hi] s."""

    session: str
    kind: str
    text: str
    lo: float
    hi: float
    mark_time: float

    @property
    def is_correction(self) -> bool:
        """A change the model must learn (``good`` only asks it to keep what it did)."""
        return self.kind != "good"

    def describe(self) -> str:
        what = f"“{self.text}”" if self.text else "silence"
        span = f"{self.lo:g} s" if abs(self.hi - self.lo) < 1e-6 else f"{self.lo:g}–{self.hi:g} s"
        return f"{self.kind} at {self.mark_time:g} s: {what} at {span}"


@dataclass
class Verdict:
    check: Check
    ok: bool
    said: list[tuple[float, str]] = field(default_factory=list)  # the model's replies in the window

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.check), "ok": self.ok, "said": [list(x) for x in self.said],
                "describe": self.check.describe()}


def same_words(a: str, b: str) -> bool:
    """The module docstring's "said": equal after normalisation (case, punctuation, spacing ignored)."""
    return bool(normalise(a)) and normalise(a) == normalise(b)


def replay_of(session: Any) -> Replay:
    """The replay settings of a loaded session (``app.core.sessions.load_session``)."""
    from app.core.protocol import DEFAULT_TOKENS_PER_FRAME
    from app.trainer.session_dialogues import session_video

    meta = session.meta
    questions = tuple((float(st.get("time", 0.0)), str(st["question"])) for st in session.steps if st.get("question"))
    return Replay(session.id, session_video(session), float(meta.get("interval", 1.0)),
                  int(meta.get("frames_per_turn", 2)), int(meta.get("tokens_per_frame", DEFAULT_TOKENS_PER_FRAME)),
                  float(meta.get("talkativeness", 0.0) or 0.0), questions)


def checks_of(session: Any) -> list[Check]:
    """One :class:`Check` per mark in force on ``session`` (see the module docstring)."""
    steps = sorted(session.steps, key=lambda s: float(s.get("time", 0.0)))
    times = [float(s.get("time", 0.0)) for s in steps]
    by_turn = {int(s["turn"]): s for s in steps if "turn" in s}
    rp = replay_of(session)
    grace = rp.turn_s + 1e-3  # the turn after the one asked for still counts
    out: list[Check] = []
    for m in session.marks:
        if m.kind == "missed":
            t = next((x for x in times if x >= m.time - 1e-6), None)
            if t is not None:
                out.append(Check(session.id, "missed", m.text, t, t + grace, m.time))
            continue
        st = by_turn.get(m.turn) if m.turn is not None else None
        if st is None:
            continue
        t = float(st.get("time", m.time))
        said = "" if st.get("silent") else str(st.get("text", "")).strip()
        if m.kind == "wrong" and m.text:
            out.append(Check(session.id, "wrong", m.text, t, t + grace, t))
        elif m.kind in ("wrong", "redundant"):
            out.append(Check(session.id, m.kind, "", t, t, t))
        elif m.kind == "good" and said:
            out.append(Check(session.id, "good", said, t, t, t))
        elif m.kind == "late" and said:
            if m.to_time is not None:
                lo = next((x for x in times if x >= m.to_time - 1e-6), t)
            else:
                earlier = [x for x in times if x < t - 1e-6]
                lo = earlier[-1] if earlier else t
            if lo < t:
                out.append(Check(session.id, "late", said, lo, t - 1e-3, t))
    return out


def judge(check: Check, turns: Sequence[tuple[float, str]]) -> Verdict:
    """``turns``: every turn's (video time, reply or "" when silent) of the replayed session."""
    window = [(t, s) for t, s in turns if check.lo - 1e-6 <= t <= check.hi + 1e-6]
    said = [(t, s) for t, s in window if s]
    if check.text:
        ok = any(same_words(s, check.text) for _, s in said)
    else:
        ok = bool(window) and not said
    return Verdict(check, ok, said)


def play(backend: Any, rp: Replay, max_new_tokens: int = 48) -> list[tuple[float, str]]:
    """Every turn of the replayed session: (video time, the reply or "" when silent)."""
    from app.core.config import SessionConfig
    from app.engine.session import ProactiveSession
    from app.eval.runner import video_source

    cfg = SessionConfig(interval=rp.interval, frames_per_turn=rp.frames_per_turn,
                        tokens_per_frame=rp.tokens_per_frame, talkativeness=rp.talkativeness,
                        max_new_tokens=max_new_tokens)
    session = ProactiveSession(backend, cfg)
    for at, text in rp.questions:
        session.ask(text, at=at)
    with video_source(rp.video) as src:
        return [(round(r.video_time, 3), "" if r.silent else r.text.strip()) for r in session.run(src)]


def open_backend(model: Path, mmproj: Path, threads: int = 0) -> Any:
    """The real engine (llama.cpp in its own process, CPU) on a GGUF pair."""
    from app.core.config import BackendSettings
    from app.engine.factory import make_backend

    return make_backend(str(model), str(mmproj), BackendSettings(n_ctx=4096, n_threads=threads, n_gpu_layers=0))


def verify(model: Path, mmproj: Path, session_dirs: Iterable[Path], threads: int = 0) -> list[Verdict]:
    """Play each marked session with the GGUF pair and judge every mark's check."""
    from app.core.sessions import load_session

    sessions = [load_session(Path(d)) for d in session_dirs]
    work = [(replay_of(s), checks_of(s)) for s in sessions]
    out: list[Verdict] = []
    if not any(c for _, c in work):
        return out
    be = open_backend(model, mmproj, threads)
    try:
        for rp, checks in work:
            if checks:
                turns = play(be, rp)
                out += [judge(c, turns) for c in checks]
    finally:
        be.close()
    return out


def summary_line(verdicts: Sequence[Verdict]) -> str:
    """"2 of 3 corrections learned; not: wrong at 4 s …" — the one line the CLI and the Train page show."""
    corr = [v for v in verdicts if v.check.is_correction]
    kept = [v for v in verdicts if not v.check.is_correction]
    parts = [f"{sum(v.ok for v in corr)} of {len(corr)} corrections learned"]
    if kept:
        parts.append(f"{sum(v.ok for v in kept)} of {len(kept)} good replies kept")
    bad = [v.check.describe() for v in verdicts if not v.ok]
    return "; ".join(parts) + (f"; not yet: {'; '.join(bad)}" if bad else "")
