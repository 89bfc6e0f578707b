"""The user's own sessions with feedback → the dialogues the model should have had (``duet train feedback``).

A saved session keeps what the model said, not the frames it saw; the frames are re-read from the
watched video with the session's own stream geometry (docs/feedback.md), so only sessions of a
video file can be trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.core import protocol
from app.trainer.dialogue import DataError, Dialogue, DialogueTurn, read_turn_frames


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
    _check_lengths(where, times, targets, asked)
    turns = [DialogueTurn(f.time, list(f.images), asked[i], targets[i]) for i, f in enumerate(frames)]
    touched = sorted({i for i in range(len(turns)) if targets[i] != said[i]}
                     | {step_index[m.turn] for m in marks if m.kind == "good" and m.turn in step_index})
    return Dialogue(f"session/{session.id}", turns, meta={"form": "feedback", "marks": len(marks),
                                                          "touched": touched})


def _check_lengths(where: str, times: list[float], targets: list[str], asked: list[str]) -> None:
    """No turn trains on a text longer than a mark may hold (:data:`app.core.feedback.MAX_TEXT_CHARS`).

    Why here too: a session's own replies and questions become targets and prompts, and a session saved
    from a server that ignored max_tokens (or edited by hand) can hold megabytes in one turn; one 120 KB
    text made a training step take minutes, during which a SIGTERM went unanswered.
    """
    from app.core import feedback as fbk

    reply_max = 2 * fbk.MAX_TEXT_CHARS  # a reply and a correction joined in one turn (feedback.targets)
    for i, (target, question) in enumerate(zip(targets, asked)):
        if len(target) > reply_max:
            raise DataError(f"{where}the reply at {times[i]:g} s has {len(target):,} characters; a turn trains on "
                            f"at most {reply_max:,} (one turn's reply and a correction). Mark it 'redundant', "
                            "or 'wrong' with a correction, or leave this session out")
        if len(question) > fbk.MAX_TEXT_CHARS:
            raise DataError(f"{where}the question at {times[i]:g} s has {len(question):,} characters; a turn "
                            f"trains on at most {fbk.MAX_TEXT_CHARS:,}. Leave this session out")


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
            meta = {**d.meta, "touched": sorted(i - k for i in touched if k <= i < k + window_turns)}
            out.append(replace(d, id=f"{d.id}#w{k // window_turns}", turns=d.turns[k:k + window_turns], meta=meta))
    return out


def marked_weights(e: Any, d: Dialogue, weight: float) -> Any:
    """Per-position loss weights of an encoded dialogue: ``weight`` on the tokens of the turns a mark changed or
    kept (``meta["touched"]``), 1 elsewhere; None when nothing is weighted (replay clips, weight 1).

    Why: one correction among ~100 replay clips is a few dozen tokens against thousands, and oversampling the
    session alone also re-trains its unmarked turns; weighting the marked turn is what lets one correction count.
    """
    touched = d.meta.get("touched") or []
    if weight == 1.0 or not touched or len(e.assistant_spans) != len(d.turns):
        return None
    import torch

    w = torch.ones(len(e.input_ids))
    for i in touched:
        a, b = e.assistant_spans[i]
        w[a:b] = weight  # the turn's tokens and its <|im_end|> (the span ends after it)
    return w


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
