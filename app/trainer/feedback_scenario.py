"""A user's corrections in their own words, set up for real: clips the demo never saw, watched by a model through
the engine and saved as sessions (as ``duet run --save-session`` saves them), then marked.

Used by ``bench/feedback_learning.py`` (the figures in docs/feedback.md) and the tests of issue 25. The
corrections are in words the demo has never said: none of "look", "ring", "popped", "crimson", "block", "showed",
"up" is in the synthetic captions (app/eval/synthetic.py: "A red circle appeared.", "The circle turned blue.").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.core import feedback as fbk

# Held-out synthetic clips (seed 7: not the demo's training seed 0, nor its held-out seed 1000).
CLIP_SEED = 7
WRONG_TEXT = "Look, a blue ring popped in!"  # replaces the demo's "A blue square appeared." at 8 s (appear-easy-001)
MISSED_TEXT = "A crimson block showed up."  # where the demo stayed silent at 6 s (appear-easy-000: red square)
# late: the demo's "The square turned green." at 8 s (colour-easy-001), asked for one turn earlier (6 s)


@dataclass(frozen=True)
class Plan:
    clip: str  # the synthetic clip id
    kind: str
    at: float
    text: str = ""


PLANS = (Plan("appear-easy-001", "wrong", 8.0, WRONG_TEXT), Plan("appear-easy-000", "missed", 6.0, MISSED_TEXT),
         Plan("colour-easy-001", "late", 8.0))


def make_clips(out: Path) -> dict[str, tuple[Path, str]]:
    """The clips of :data:`PLANS` (clip id → (video, question)), written once into ``out``."""
    from app.eval.synthetic import SyntheticConfig, generate

    out.mkdir(parents=True, exist_ok=True)
    wanted = {p.clip for p in PLANS}
    vids = generate(SyntheticConfig(families=("appear", "colour"), difficulties=("easy",), per_family=2,
                                    seed=CLIP_SEED))
    clips = {}
    for v in vids:
        if v.id in wanted:
            path = out / f"{v.id}.avi"
            if not path.is_file():
                v.write(path)
            clips[v.id] = (path, v.question)
    return clips


def record_session(store: object, video: Path, question: str, model: Path, mmproj: Path, name: str = "demo") -> Path:
    """Watch ``video`` with the GGUF pair through the engine (evaluation mode) and save it as a session; its folder."""
    from app.core.sessions import session_meta
    from app.core.types import StepResult
    from app.trainer.feedback_check import Replay, open_backend, play

    rp = Replay("new", video, 1.0, 2, 16, 0.0, ((0.0, question),))
    be = open_backend(model, mmproj)
    try:
        turns = play(be, rp)
    finally:
        be.close()
    w = store.create(session_meta(str(video), name, interval=1.0, frames_per_turn=2,  # type: ignore[attr-defined]
                                  tokens_per_frame=16, talkativeness=0.0, video=str(video)))
    for i, (t, text) in enumerate(turns):
        w.add_step(StepResult(turn=i, video_time=t, text=text or "NO REPLY", silent=not text,
                              question=question if i == 0 else None), thumbnail=False)
    w.close("ended")
    return Path(w.directory)


def mark(session_dir: Path, plan: Plan) -> fbk.Feedback:
    """Give ``plan``'s mark on the saved session, as `duet sessions feedback` does."""
    from app.core.sessions import add_mark, load_session

    m = fbk.make(plan.kind, plan.at, load_session(session_dir).steps, text=plan.text)
    add_mark(session_dir, m)
    return m


def marked_sessions(store: object, clips_dir: Path, model: Path, mmproj: Path,
                    plans: tuple[Plan, ...] = PLANS) -> list[Path]:
    """One saved, marked session per plan (the clips watched by ``model``)."""
    clips = make_clips(clips_dir)
    out = []
    for p in plans:
        video, question = clips[p.clip]
        d = record_session(store, video, question, model, mmproj)
        mark(d, p)
        out.append(d)
    return out
