"""`duet sessions list | show | export | feedback`: the Sessions page from a terminal, on a real saved session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.sessions import load_session
from tests.core.saved_session import write_session


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))
    return write_session(video=str(tmp_path / "clip.avi"), durable=True).name


def test_list_show_export(saved: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list"]) == 0
    assert f"{saved}  " in capsys.readouterr().out
    assert main(["sessions", "show", saved]) == 0
    assert "**[00:04] Duet:** A red circle appeared." in capsys.readouterr().out
    assert main(["sessions", "export", saved, "--format", "json", "--out", str(tmp_path / "s.json")]) == 0
    data = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert data["id"] == saved and len(data["steps"]) == 4 and data["meta"]["tokens_per_frame"] == 16


def test_feedback_attaches_to_the_nearest_reply_and_can_be_undone(saved: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "feedback", saved, "--at", "7.4", "--kind", "redundant"]) == 0
    assert "the reply at 00:08 (turn 3): redundant" in capsys.readouterr().out
    assert main(["sessions", "feedback", saved, "--at", "3", "--kind", "wrong", "--correction", "A red star."]) == 0
    assert main(["sessions", "feedback", saved, "--at", "5", "--kind", "missed", "--correction", "Look."]) == 0
    s = load_session(tmp_path / "sessions" / saved)
    assert [(m.kind, m.turn, m.text) for m in s.marks] == [("wrong", 1, "A red star."), ("missed", None, "Look."),
                                                            ("redundant", 3, "")]
    assert main(["sessions", "feedback", saved, "--at", "8", "--kind", "redundant", "--undo"]) == 0
    assert [m.kind for m in load_session(tmp_path / "sessions" / saved).marks] == ["wrong", "missed"]


@pytest.mark.parametrize(("args", "message"), [
    (["feedback", "nope", "--at", "1", "--kind", "good"], "no saved session 'nope'"),
    (["feedback", "../x", "--at", "1", "--kind", "good"], "no saved session"),
    (["feedback", "{sid}", "--at", "1", "--kind", "missed"], "needs the text"),
    (["feedback", "{sid}", "--at", "-1", "--kind", "good"], "--at must be"),
    (["feedback", "{sid}", "--at", "4", "--kind", "late", "--correction", "x"], "takes no text"),
    (["feedback", "{sid}", "--at", "4", "--kind", "good", "--undo"], "no 'good' mark"),
])
def test_bad_requests_are_explained_and_change_nothing(saved: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      args: list[str], message: str) -> None:
    log = tmp_path / "sessions" / saved / "events.jsonl"
    before = log.read_bytes()
    assert main(["sessions", *[a.format(sid=saved) for a in args]]) == 2
    assert message in capsys.readouterr().err
    assert log.read_bytes() == before
