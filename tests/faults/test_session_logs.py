"""Fault catalogue, part 8: saved sessions after a crash, with hostile text in them, and with secrets.

* A log cut mid-record (a crash) and then marked: the mark starts a fresh line and is kept.
* Escape sequences in a reply, a question, a correction or a crafted log never reach the terminal
  (``duet sessions show | list | export``), while the JSON export keeps the text as it was.
* A password in a ``--remote`` URL is never recorded, printed or exported; a remote session records
  the server's model and URL, not the ``--model`` default.

Each case runs the real ``duet`` command in-process on a real session folder (and, for ``--remote``,
against a real OpenAI-compatible stand-in server on loopback).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.core.sessions import SessionStore, load_session, session_meta
from app.core.types import Frame, StepResult
from tests.engine.loopback import chat_reply, send_json, serve_http

ESC = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x1b]52;c;ZXZpbA==\x1b\\"


def _saved(root: Path, texts: tuple[str, ...] = ("NO REPLY", "A red circle appeared.", "NO REPLY",
                                                 "A red circle appeared."), source: str = "clip.avi") -> Path:
    """A session of four 2-second turns (an 8 s video), closed as the app closes it."""
    meta = session_meta(source, "demo", interval=1.0, frames_per_turn=2, tokens_per_frame=16,
                        talkativeness=0.0, video=str(root / "clip.avi"))
    w = SessionStore(root).create(meta, durable=False)
    img = np.full((16, 16, 3), 90, np.uint8)
    for i, text in enumerate(texts):
        t = 2.0 * (i + 1)
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == "NO REPLY",
                              frames=(Frame(img, time=t - 1), Frame(img, time=t))))
    w.close("ended")
    return w.directory


# ---- a torn log --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [1, 9, 30],
                         ids=["the newline", "inside the end record", "into the last step"])
def test_a_mark_after_a_torn_log_is_kept(cut, run, data_dir):
    d = _saved(data_dir / "sessions")
    log = d / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-cut])  # the app killed mid-record
    whole_steps = len(load_session(d).steps)
    r = run("sessions", "feedback", d.name, "--at", "4", "--kind", "good")
    assert r.rc == 0 and "marked the reply at 00:04 (turn 1): good" in r.out
    s = load_session(d)
    assert [(m.kind, m.turn) for m in s.marks] == [("good", 1)]  # the mark is not lost with the torn line
    assert len(s.steps) == whole_steps  # every whole record kept
    assert s.damaged_lines == (0 if cut == 1 else 1)  # only the torn record is skipped
    assert log.read_bytes().endswith(b"\n") and log.read_bytes().count(b'"type": "feedback"') == 1
    assert json.loads(log.read_bytes().splitlines()[-1])["kind"] == "good"  # on a line of its own
    # A second mark appends after the first as usual.
    assert run("sessions", "feedback", d.name, "--at", "8", "--kind", "redundant").rc == 0
    assert [m.kind for m in load_session(d).marks] == ["good", "redundant"]


def test_a_record_glued_onto_a_torn_line_by_an_older_duet_is_recovered(data_dir):
    """Logs written before appends started a fresh line: the whole record after the torn one is kept."""
    d = _saved(data_dir / "sessions")
    log = d / "events.jsonl"
    mark = {"type": "feedback", "v": 2, "kind": "good", "turn": 1, "time": 4.0, "text": "", "to_time": None,
            "on": True, "wall": 1.0}
    log.write_bytes(log.read_bytes()[:-9] + json.dumps(mark).encode() + b"\n")
    s = load_session(d)
    assert [(m.kind, m.turn) for m in s.marks] == [("good", 1)]
    assert len(s.steps) == 4 and s.damaged_lines == 1 and s.ended is None  # the torn end record is skipped


def test_the_running_writer_continues_a_torn_log_on_a_fresh_line(tmp_path):
    """The app's own writer (one session's log) also starts a fresh line after bytes that end mid-record."""
    d = _saved(tmp_path / "sessions")
    from app.core.sessions import SessionWriter

    log = d / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-9])
    w = SessionWriter(d, {"source": "clip.avi", "model": "demo"}, durable=False)
    w.add_question("What now?")
    w.close("ended")
    s = load_session(d)
    assert [q["text"] for q in s.questions] == ["What now?"] and s.ended == "ended" and s.damaged_lines == 1


# ---- escape sequences ----------------------------------------------------------------------------------
def _crafted(data_dir: Path) -> Path:
    d = _saved(data_dir / "sessions", texts=("NO REPLY", f"A red{ESC} circle.", "NO REPLY", "Bye."),
               source=f"clip{ESC}.avi")
    with open(d / "events.jsonl", "a", encoding="utf-8") as fh:  # a crafted log: a question with escapes
        fh.write(json.dumps({"type": "step", "turn": 9, "time": 8.0, "silent": False, "text": f"x{ESC}y",
                             "question": f"Why{ESC}?"}) + "\n")
    meta = json.loads((d / "meta.json").read_text())
    meta.update(model=f"demo{ESC}", device=f"CPU{ESC}")
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def _clean(text: str) -> None:
    assert not any(c in text for c in "\x1b\x9b\x07\x9d"), repr(text)


def test_escape_sequences_never_reach_the_terminal(run, data_dir, tmp_path):
    d = _crafted(data_dir)
    r = run("sessions", "feedback", d.name, "--at", "4", "--kind", "wrong",
            "--correction", f"A red{ESC} star.")
    assert r.rc == 0
    _clean(r.out + r.err)
    for args in (["show", d.name], ["show", d.name, "--silent"], ["export", d.name, "--format", "md"],
                 ["list"]):
        r = run("sessions", *args)
        assert r.rc == 0
        _clean(r.out + r.err)
    shown = run("sessions", "show", d.name).out
    assert "**[00:04] Duet:** A red circle. _(wrong: “A red star.”)_" in shown
    assert "**[00:08] You:** Why?" in shown and "- Source: `clip.avi`" in shown and "- Model: `demo`" in shown
    assert run("sessions", "export", d.name, "--format", "md", "--out", tmp_path / "s.md").rc == 0
    _clean((tmp_path / "s.md").read_text(encoding="utf-8"))
    # JSON keeps every string as it was, with the controls escaped: safe to print, lossless to read.
    r = run("sessions", "export", d.name, "--format", "json")
    _clean(r.out)
    data = json.loads(r.out)
    assert data["steps"][1]["text"] == f"A red{ESC} circle."
    assert data["marks"][0]["text"] == f"A red{ESC} star."


# ---- secrets in a --remote URL ------------------------------------------------------------------------
def test_a_remote_password_is_never_recorded_printed_or_exported(run, data_dir, vtest_avi, tmp_path):
    with serve_http(lambda h, rec: send_json(h, 200, chat_reply("A person walks in."))) as (base, rec):
        url = base.replace("http://", "http://duet:hunter2-secret@") + "/v1"
        r = run("run", "--source", vtest_avi, "--remote", url, "--remote-model", "mmduet2", "--fast",
                "--max-turns", "2", "--save-session")
    assert r.rc == 0, r.err
    # The model list once (which server this is: vllm_remote.is_vllm), then chats; the password in none of them.
    assert rec.requests and all(p in ("/v1/chat/completions", "/v1/models") for _, p, _ in rec.requests)
    assert not any("authorization" in h for _, _, h in rec.requests)
    assert "hunter2" not in r.out + r.err
    sid = r.out.split("session ")[-1].strip()
    d = data_dir / "sessions" / sid
    for f in d.rglob("*"):
        if f.is_file():
            assert b"hunter2" not in f.read_bytes(), f
    meta = json.loads((d / "meta.json").read_text())
    assert meta["model"] == f"mmduet2 at {base}/v1"  # the server's model, not --model's default "demo"
    assert meta["device"] == f"remote: {base}/v1"
    for args in (["list"], ["show", sid], ["export", sid, "--format", "md"],
                 ["export", sid, "--format", "json"]):
        out = run("sessions", *args)
        assert out.rc == 0 and "hunter2" not in out.out + out.err
    assert f"- Model: `mmduet2 at {base}/v1`" in run("sessions", "show", sid).out


def test_a_password_saved_by_an_older_duet_is_not_exported(run, data_dir):
    d = _saved(data_dir / "sessions")
    meta = json.loads((d / "meta.json").read_text())
    meta["device"] = "remote: http://duet:hunter2-secret@gpu-box:8080/v1"
    (d / "meta.json").write_text(json.dumps(meta))
    for args in (["show", d.name], ["export", d.name, "--format", "md"],
                 ["export", d.name, "--format", "json"]):
        out = run("sessions", *args)
        assert out.rc == 0 and "hunter2" not in out.out and "gpu-box:8080/v1" in out.out


@pytest.mark.parametrize("server", ["refuses", "nothing listening"])
def test_a_remote_password_is_not_printed_in_errors(server, run, data_dir, vtest_avi):
    from tests.engine.loopback import refused_port

    if server == "refuses":
        refusal = {"error": {"message": "invalid api key"}}
        with serve_http(lambda h, rec: send_json(h, 401, refusal)) as (base, _):
            url = base.replace("http://", "http://duet:hunter2-secret@") + "/v1"
            r = run("run", "--source", vtest_avi, "--remote", url, "--remote-model", "mmduet2", "--fast",
                    "--max-turns", "1")
        clean = f"{base}/v1"
    else:
        with refused_port() as port:
            clean = f"http://127.0.0.1:{port}/v1"
            r = run("run", "--source", vtest_avi, "--remote", clean.replace("http://", "http://duet:hunter2-secret@"),
                    "--fast", "--max-turns", "1")
    assert r.rc == 2
    assert "hunter2" not in r.out + r.err
    assert clean in r.err  # the server is still named, without the password
