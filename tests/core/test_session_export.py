"""A saved session as Markdown and JSON: questions and replies at their video time, thumbnails, feedback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.core.session_export import export_json, export_markdown
from app.core.session_read import load_session
from app.core.sessions import SessionStore, add_feedback
from app.core.types import Frame, StepResult


def _step(turn: int, text: str, *, question: str | None = None) -> StepResult:
    img = np.full((48, 64, 3), turn * 20 % 255, np.uint8)
    return StepResult(turn=turn, video_time=(turn + 1) * 2.0, text=text, silent=text == "NO REPLY",
                      question=question, frames=(Frame(img, time=turn),))


def test_markdown_and_json_carry_replies_questions_and_feedback(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({"source": "file:clip.mp4", "model": "tiny"})
    w.add_question("what is on the table?")
    w.add_step(_step(0, "NO REPLY"))
    w.add_step(_step(1, "A knife and an onion.", question="what is on the table?"))
    w.add_step(_step(2, "The onion is being chopped."), folded=True)
    w.add_feedback(1, "late")
    w.add_feedback(2, "wrong")
    w.close()
    s = load_session(w.directory)

    md = export_markdown(s)
    assert "**[00:04] You:** what is on the table?" in md
    assert "A knife and an onion. _(should have spoken earlier)_" in md
    assert "folded on screen" in md
    assert "](thumbs/turn-000001.jpg)" in md
    assert "_(silent)_" not in md and "[00:02] _(silent)_" in export_markdown(s, include_silent=True)
    data = json.loads(export_json(s))
    assert data["feedback"] == {"1": ["late"], "2": ["wrong"]}
    assert len(data["steps"]) == 3

    add_feedback(w.directory, 1, "wrong", text="A knife and a tomato.")  # later, from the session browser
    assert "A knife and an onion. _(should have spoken earlier; wrong: “A knife and a tomato.”)_" in \
        export_markdown(load_session(w.directory))


def test_a_session_without_an_end_says_it_was_interrupted(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({"source": "screen"})
    w.add_step(_step(0, "hello"))
    assert "- Ended: interrupted" in export_markdown(load_session(w.directory))
    w.close("ended")
    assert "- Ended: ended" in export_markdown(load_session(w.directory))
