"""The session store: durable JSONL + thumbnails, feedback, export, and a kill that loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.core.sessions import SessionStore, add_feedback, load_session, sessions_with_feedback
from app.core.types import Frame, StepResult

REPO = Path(__file__).resolve().parents[2]


def _result(turn: int, text: str, *, silent: bool = False, question: str | None = None) -> StepResult:
    img = np.full((48, 64, 3), turn * 20 % 255, np.uint8)
    return StepResult(turn=turn, video_time=(turn + 1) * 2.0, text=text, silent=silent, question=question,
                      frames=(Frame(img, time=turn),))


def test_steps_questions_feedback_are_recorded(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    w = store.create({"source": "file:clip.mp4", "model": "tiny"})
    w.add_question("what is on the table?")
    w.add_step(_result(0, "NO REPLY", silent=True))
    w.add_step(_result(1, "A knife and an onion.", question="what is on the table?"))
    w.add_step(_result(2, "The onion is being chopped."), folded=True)
    w.add_feedback(1, "late")
    w.add_feedback(2, "redundant")
    w.add_feedback(2, "redundant", on=False)  # the user changed their mind
    w.add_feedback(2, "wrong")
    w.update_meta(device="CPU")
    w.close()

    s = load_session(w.directory)
    assert s.ended == "stopped" and s.damaged_lines == 0
    assert [st["turn"] for st in s.steps] == [0, 1, 2]
    assert "thumb" not in s.steps[0]  # silent and unasked: no picture kept
    assert (w.directory / s.steps[1]["thumb"]).stat().st_size > 0
    assert s.steps[2]["folded"] is True
    assert s.feedback == {1: {"late"}, 2: {"wrong"}}
    assert s.meta["device"] == "CPU"

    add_feedback(w.directory, 1, "wrong", text="A knife and a tomato.")  # later, from the session browser
    (marked,) = sessions_with_feedback(store)
    assert [(m.turn, m.kind, m.time, m.text) for m in marked.marks] == [
        (1, "late", 4.0, ""), (1, "wrong", 4.0, "A knife and a tomato."), (2, "wrong", 6.0, "")]


def _watch_fsync(monkeypatch: pytest.MonkeyPatch, log: Path) -> list[int]:
    """Sizes of ``log`` at each fsync of it (the real fsync still runs)."""
    import threading

    real = os.fsync
    sizes: list[int] = []
    lock = threading.Lock()

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if log.exists() and (st.st_ino, st.st_dev) == (log.stat().st_ino, log.stat().st_dev):
            with lock:
                sizes.append(st.st_size)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return sizes


def _synced_through(sizes: list[int], size: int, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sizes and max(sizes) >= size:
            return True
        time.sleep(0.005)
    return False


def test_every_record_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module promises an fsync per record (on a helper thread, coalesced): each one is covered by one."""
    store = SessionStore(tmp_path)
    w = store.create({"source": "screen"})
    sizes = _watch_fsync(monkeypatch, w.directory / "events.jsonl")
    for turn in range(5):
        w.add_step(_result(turn, "NO REPLY", silent=True))
        size = (w.directory / "events.jsonl").stat().st_size
        assert _synced_through(sizes, size), f"record {turn} ({size} bytes) never reached an fsync: {sizes}"
    w.add_question("anything?")
    w.close()
    assert max(sizes) == (w.directory / "events.jsonl").stat().st_size  # the end record too

    quick = store.create({"source": "screen"}, durable=False)
    sizes_q = _watch_fsync(monkeypatch, quick.directory / "events.jsonl")
    quick.add_step(_result(0, "NO REPLY", silent=True))
    quick.close()
    assert sizes_q == []  # durable=False (tests, benchmarks) really skips it

    log = w.directory / "events.jsonl"
    sizes_b = _watch_fsync(monkeypatch, log)
    add_feedback(w.directory, 0, "late")  # from the session browser, after the session ended
    assert sizes_b == [log.stat().st_size]


def test_unknown_feedback_kind_is_rejected(tmp_path: Path) -> None:
    w = SessionStore(tmp_path).create({})
    w.add_step(_result(0, "hello"))
    with pytest.raises(ValueError, match="unknown feedback"):
        w.add_feedback(0, "boring")
    with pytest.raises(ValueError, match="no turn 5"):
        w.add_feedback(5, "late")


def test_list_newest_first(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    a = store.create({"source": "a"})
    b = store.create({"source": "b"})
    (tmp_path / "stray-folder").mkdir()
    assert set(store.list()) == {a.directory, b.directory}
    names = [p.name for p in store.list()]
    assert names == sorted(names, reverse=True)
    assert {s.meta["source"] for s in store.sessions()} == {"a", "b"}


CHILD = textwrap.dedent("""
    import sys
    from app.capture.video import VideoFileSource
    from app.core.sessions import SessionStore
    from app.engine.llama_backend import LlamaBackend, LlamaSettings
    from app.engine.session import ProactiveSession, SessionConfig
    model, mmproj, video, root = sys.argv[1:5]
    backend = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=4096))
    session = ProactiveSession(backend, SessionConfig(interval=0.5, frames_per_turn=1, talkativeness=50,
                                                      max_new_tokens=16))
    writer = SessionStore(root).create({"source": video, "model": model})
    with VideoFileSource(video, realtime=False) as src:
        for r in session.run(src):
            writer.add_step(r)
            print("wrote", r.turn, flush=True)
""")


def test_killed_session_keeps_every_written_step(tmp_path: Path, tiny_model, vtest_avi: Path) -> None:
    """A real session in a child process, SIGKILLed mid-run: every step it reported is on disk, whole."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_model.model), str(tiny_model.mmproj),
                             str(vtest_avi), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    reported = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("wrote"):
                reported.append(int(line.split()[1]))
            if len(reported) >= 6:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert len(reported) >= 6, "the child never got going"
    [directory] = SessionStore(tmp_path).list()
    s = load_session(directory)
    turns = [st["turn"] for st in s.steps]
    assert turns[: len(reported)] == reported  # nothing reported is missing (it may have written one more)
    assert s.ended is None  # killed: no end record
    for st in s.steps:
        assert not st["silent"]
        assert (directory / st["thumb"]).stat().st_size > 0


def test_a_mark_after_a_torn_line_starts_a_fresh_line(tmp_path: Path) -> None:
    """A log cut mid-record by a crash: a mark added afterwards (the Sessions page) is kept, not glued on."""
    w = SessionStore(tmp_path).create({"source": "file:clip.mp4", "model": "tiny"}, durable=False)
    w.add_step(_result(0, "A red circle."))
    w.add_step(_result(1, "A blue square."))
    w.close()
    log = w.directory / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-12])  # into the end record
    add_feedback(w.directory, 1, "good")
    s = load_session(w.directory)
    assert s.feedback == {1: {"good"}} and len(s.steps) == 2 and s.damaged_lines == 1
    # On a line of its own (the reader also recovers a glued record, so the file itself is looked at).
    assert json.loads(log.read_bytes().splitlines()[-1])["kind"] == "good"


def test_session_ids_are_names_inside_the_store(tmp_path: Path) -> None:
    from app.core.errors import InputError
    from app.core.sessions import check_session_id

    store = SessionStore(tmp_path)
    w = store.create({"source": "file:clip.mp4", "model": "tiny"}, durable=False)
    w.close()
    assert check_session_id(w.id) == w.id and store.find(f" {w.id} ") == w.directory
    for sid in ("..", ".", "../x", "/tmp", "a\\b", "a\x00b", "", "-x", "a" * 200):
        with pytest.raises(InputError, match="that is not a session id"):
            store.find(sid)
    with pytest.raises(FileNotFoundError, match="no saved session 'nope'"):
        store.find("nope")
