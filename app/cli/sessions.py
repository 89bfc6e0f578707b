"""``duet sessions list | show ID | export ID | feedback ID``: the Sessions page, headless.

Usage::

    duet sessions list
    duet sessions show ID                       the transcript (replies, questions, feedback)
    duet sessions export ID --format md|json [--out FILE]
    duet sessions feedback ID --at SECONDS --kind late|missed|redundant|wrong|good [--correction TEXT] [--undo]

Feedback goes through the one schema (``app/core/feedback.py``, ``docs/feedback.md``): reply kinds
attach to the reply at or nearest ``--at``; ``missed`` needs ``--correction`` (what should have been
said) and no reply. It is appended to the session's log exactly as the chat's buttons append it, and
``duet train feedback`` trains on it.

Part of the ``duet`` command rather than ``app.core``: it parses source specs (``app.capture``),
which the core may not import.

What is printed comes from files anyone could have edited (a crafted log, a correction typed with
escape codes): it passes through :func:`app.core.textsafe.terminal_safe` (the Markdown export does
this itself). An id is checked before it becomes a path; ``--at`` and ``--to`` must fall within the
session; ``--out`` must be a regular file (or new), written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.core.errors import InputError
from app.core.textsafe import terminal_safe
from app.core.timefmt import clock as _clock


def _store(a: argparse.Namespace):  # noqa: ANN202
    from app.core.sessions import SessionStore

    return SessionStore(Path(a.root) if getattr(a, "root", None) else None)


def _load(a: argparse.Namespace):  # noqa: ANN202
    from app.core.sessions import load_session

    store = _store(a)
    problem = store.root_problem()
    if problem:
        raise InputError(problem)
    return load_session(store.find(a.id))


def cmd_list(a: argparse.Namespace) -> int:
    store = _store(a)
    problem = store.root_problem()
    if problem:  # not "no saved sessions": they cannot exist where they are looked for
        raise InputError(problem)
    sessions = list(store.sessions())
    if not sessions:
        print(f"No saved sessions in {store.root}. `duet run … --save-session` or the app's Watch page make them.")
        return 0
    for s in sessions:
        state = s.ended or "interrupted"
        note = f"  ({s.problem})" if s.problem else ""
        print(terminal_safe(f"{s.id}  {s.title}  model={s.meta.get('model', '?')}  turns={len(s.steps)} "
                            f"replies={len(s.replies)} feedback={len(s.marks)}  {state}{note}"))
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from app.core.session_export import export_markdown

    print(export_markdown(_load(a), include_silent=a.silent), end="")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from app.core.atomic import write_text_atomic
    from app.core.bounded import check_output_file
    from app.core.session_export import export_json, export_markdown

    out = check_output_file(a.out) if a.out else None  # before reading anything: a FIFO would block the write
    s = _load(a)
    text = export_markdown(s) if a.format == "md" else export_json(s)
    if out is not None:
        write_text_atomic(out, text)  # like the Sessions page: never half a file, created 0600
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def cmd_feedback(a: argparse.Namespace) -> int:
    from app.core import feedback as fbk
    from app.core.sessions import add_mark

    correction = a.correction or ""
    try:
        correction.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line arrive as lone surrogates
        raise InputError("--correction is not valid UTF-8 text (the terminal passed other bytes); type it "
                         "again in UTF-8") from None
    if len(correction) > fbk.MAX_TEXT_CHARS:  # before the session is read: nothing to do with it
        raise InputError(fbk.too_long("--correction", len(correction)))
    s = _load(a)
    _check_times(a, s.steps)
    if a.undo:
        placeholder = "-" if a.kind == "missed" else ""  # only the mark's key matters for an undo
        target = fbk.make(a.kind, a.at, s.steps, text=placeholder)
        live = [m for m in s.marks if m.key == target.key]
        if not live:
            raise InputError(f"no '{a.kind}' mark in force at {a.at:g} s to undo")
        m = live[0]
        mark = fbk.Feedback(m.kind, m.time, m.turn, m.text, m.to_time, on=False)
    else:
        mark = fbk.make(a.kind, a.at, s.steps, text=correction, to_time=a.to)
    add_mark(s.directory, mark)
    where = f"the reply at {_clock(mark.time)} (turn {mark.turn})" if mark.turn is not None else _clock(mark.time)
    print(terminal_safe(f"{'withdrew' if a.undo else 'marked'} {where}: {mark.describe()}"))
    return 0


def _check_times(a: argparse.Namespace, steps: list[dict]) -> None:
    """``--at`` (and ``--to``) within the session: 0 to the video time of its last turn, finite.

    Why: a mark at 99999 s on an 8 s video, or at NaN, was stored and then either attached to
    whatever reply was nearest or silently never trained on.
    """
    import math

    times = [float(t) for t in (st.get("time", 0.0) for st in steps) if isinstance(t, (int, float))]
    end = max(times, default=None)
    if end is None:
        raise InputError("this session has no turns to mark")
    for flag, value in (("--at", a.at), ("--to", a.to)):
        if value is not None and (not math.isfinite(value) or not 0 <= value <= end + 1e-6):
            raise InputError(f"{flag} must be a video time within 0 to {end:g} s (this session's turns), "
                             f"got {value:g}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sessions`` on the ``duet`` command's sub-parsers."""
    from app.core.feedback import KINDS

    p = subparsers.add_parser("sessions", help="saved sessions: list, show, export, give feedback",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="the session store (default: the app's, or $DUET_DATA_DIR/sessions)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every saved session, newest first").set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="a session's transcript with its feedback")
    sh.add_argument("id")
    sh.add_argument("--silent", action="store_true", help="also list silent turns")
    sh.set_defaults(func=cmd_show)
    ex = sub.add_parser("export", help="a session as Markdown or JSON")
    ex.add_argument("id")
    ex.add_argument("--format", choices=["md", "json"], default="md")
    ex.add_argument("--out", help="write here instead of stdout")
    ex.set_defaults(func=cmd_export)
    fb = sub.add_parser("feedback", help="mark a reply (or a missed moment) for training")
    fb.add_argument("id")
    fb.add_argument("--at", type=float, required=True, metavar="SECONDS",
                    help="video time: the reply at or nearest it; for 'missed', the moment itself")
    fb.add_argument("--kind", required=True, choices=list(KINDS),
                    help="; ".join(f"{k}: {v}" for k, v in KINDS.items()))
    fb.add_argument("--correction", metavar="TEXT", help="wrong: what it should have said; missed: required "
                    "(at most 1,000 characters: one turn's reply)")
    fb.add_argument("--to", type=float, metavar="SECONDS", help="late: when it should have spoken (default: one "
                                                                "turn earlier)")
    fb.add_argument("--undo", action="store_true", help="withdraw this mark")
    fb.set_defaults(func=cmd_feedback)
