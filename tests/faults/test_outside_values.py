"""Fault catalogue, part 9: values from outside that used to be accepted unchecked.

``settings.toml`` values outside the range the same setting has as a flag, feedback times outside
the session, correction bytes that are not UTF-8, and a ``DUET_DATA_DIR`` that is a file. Each is
refused (or replaced by its default) with a message that gives the valid range or says what to do;
none is stored, none crashes the app.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.sessions import SessionStore, session_meta
from app.core.settings import Settings, SettingsStore
from app.core.types import Frame, StepResult

REPO = Path(__file__).resolve().parents[2]

# settings.toml → the message: key, value and valid range (that of the flag, app/core/config.py)
BAD_SETTINGS = {
    "[session]\ninterval = nan": "[session] interval must be within 0.1 to 60 s, got nan",
    "[session]\ninterval = inf": "[session] interval must be within 0.1 to 60 s, got inf",
    "[session]\nframes_per_turn = 99": "[session] frames_per_turn must be within 1 to 4, got 99",
    "[session]\ntalkativeness = -1e9": "[session] talkativeness must be within -50 to 50, got -1000000000.0",
    "[overlay]\nopacity = -4": "[overlay] opacity must be within 0.2 to 1, got -4.0",
    "[overlay]\nfade_seconds = 0": "[overlay] fade_seconds must be within 3 to 300 s, got 0.0",
    "[overlay]\nfont_size = 1000": "[overlay] font_size must be within 9 to 40 pt, got 1000",
    "[speech]\nrate = -5": "[speech] rate must be within 80 to 400 words/min, got -5",
}


@pytest.mark.parametrize("text", BAD_SETTINGS)
def test_settings_out_of_range_are_reported_and_replaced_by_the_default(text, tmp_path, caplog):
    store = SettingsStore(tmp_path)
    store.path.write_text(f"format = 1\n{text}\n[window]\nwidth = 900\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="duet.settings"):
        s = store.load()
    section, key = text[1:].split("]")[0], text.split("\n")[1].split(" =")[0]
    assert getattr(getattr(s, section), key) == getattr(getattr(Settings(), section), key)  # the default
    assert s.window.width == 900  # the rest of the file is kept
    assert len(store.problems) == 1 and store.problems[0].startswith(BAD_SETTINGS[text])
    assert "the default" in store.problems[0]
    assert [r.getMessage()[:len(BAD_SETTINGS[text]) + 10] for r in caplog.records] == [
        f"settings: {BAD_SETTINGS[text]}"]
    assert store.path.exists() and store.recovered_from is None  # a value, not the file: nothing set aside


def test_the_settings_defaults_and_the_dialog_ranges_are_within_the_limits():
    """The file, the dialog and the flags accept the same values (one table: app/core/config.py)."""
    from app.core.settings import LIMITS

    d = Settings()
    for (section, key), lim in LIMITS.items():
        v = getattr(getattr(d, section), key)
        assert lim.low <= v <= lim.high and math.isfinite(v), (section, key)


# ---- feedback times and text -------------------------------------------------------------------------------
@pytest.fixture
def saved(data_dir) -> Path:
    """An 8 s video's session: four 2-second turns, replies at 4 s and 8 s."""
    meta = session_meta("clip.avi", "demo", interval=1.0, frames_per_turn=2, tokens_per_frame=16,
                        talkativeness=0.0)
    w = SessionStore().create(meta, durable=False)
    img = np.full((16, 16, 3), 90, np.uint8)
    for i, text in enumerate(["NO REPLY", "A red circle appeared.", "NO REPLY", "A red circle appeared."]):
        t = 2.0 * (i + 1)
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == "NO REPLY",
                              frames=(Frame(img, time=t - 1), Frame(img, time=t))))
    w.close("ended")
    return w.directory


FEEDBACK_CASES = {
    "--at past the end": (["--at", "99999", "--kind", "good"], "--at must be a video time within 0 to 8 s "
                                                               "(this session's turns), got 99999"),
    "--at past the end, missed": (["--at", "99999", "--kind", "missed", "--correction", "x"],
                                  "--at must be a video time within 0 to 8 s"),
    "--at nan": (["--at", "nan", "--kind", "good"],
                 "--at must be a video time within 0 to 8 s (this session's turns), got nan"),
    "--at inf": (["--at", "inf", "--kind", "redundant"], "got inf"),
    "--at negative": (["--at", "-1", "--kind", "good"], "got -1"),
    "--to negative": (["--at", "4", "--kind", "late", "--to", "-3"],
                      "--to must be a video time within 0 to 8 s (this session's turns), got -3"),
    "--to nan": (["--at", "4", "--kind", "late", "--to", "nan"], "--to must be a video time within 0 to 8 s"),
    "correction bytes not UTF-8": (["--at", "4", "--kind", "wrong", "--correction", "A red \udcff star."],
                                   "--correction is not valid UTF-8 text"),
}


@pytest.mark.parametrize("case", FEEDBACK_CASES)
def test_feedback_outside_the_session_is_refused_with_the_range(case, saved, run):
    args, message = FEEDBACK_CASES[case]
    before = (saved / "events.jsonl").read_bytes()
    r = run("sessions", "feedback", saved.name, *args)
    assert r.rc == 2
    assert message in r.err
    assert (saved / "events.jsonl").read_bytes() == before  # nothing stored


def test_correction_bytes_that_are_not_utf8_from_a_real_terminal(saved, data_dir):
    """Raw bytes on a real command line (what Python turns into lone surrogates): a message, no traceback."""
    env = {"DUET_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    cmd = [sys.executable.encode(), b"-m", b"app.cli", b"sessions", b"feedback", saved.name.encode(),
           b"--at", b"4", b"--kind", b"wrong", b"--correction", b"A red \xff star."]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert b"Traceback" not in r.stderr
    assert b"--correction is not valid UTF-8 text" in r.stderr
    assert b'"kind": "wrong"' not in (saved / "events.jsonl").read_bytes()


def test_a_feedback_record_with_a_negative_to_time_is_damage_when_read(saved):
    from app.core.sessions import load_session

    with open(saved / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"type": "feedback", "v": 2, "kind": "late", "turn": 1, "time": 4.0, "text": "",
                             "to_time": -3, "on": True}) + "\n")
    s = load_session(saved)
    assert s.marks == [] and s.damaged_lines == 1


# ---- DUET_DATA_DIR is a file -------------------------------------------------------------------------
@pytest.fixture
def data_file(tmp_path, monkeypatch) -> Path:
    f = tmp_path / "duet-data"
    f.write_text("not a folder")
    monkeypatch.setenv("DUET_DATA_DIR", str(f))
    monkeypatch.setenv("DUET_CONFIG_DIR", str(tmp_path / "config"))
    return f


@pytest.mark.parametrize(("args", "message"), [
    (["models", "list"], "the model library cannot be used: {f} is a file, not a folder, so {f}/models "
                         "cannot be used; point DUET_DATA_DIR at a folder (or unset it)"),
    (["sessions", "list"], "saved sessions cannot be kept: {f} is a file, not a folder, so {f}/sessions "
                           "cannot be used; point DUET_DATA_DIR at a folder (or unset it)"),
    (["sessions", "show", "20260101-120000-ab12"], "saved sessions cannot be kept: {f} is a file"),
    (["run", "--source", "{video}", "--model", "mine", "--fast"], "mine: no such file, and the model library "
                                                                  "cannot be used: {f} is a file"),
])
def test_a_data_dir_that_is_a_file_is_said_not_shown_as_empty(args, message, data_file, run, vtest_avi):
    r = run(*[a.format(video=vtest_avi) for a in args])
    assert r.rc == 2
    assert message.format(f=data_file) in r.err
    assert "is empty" not in r.out and "No saved sessions" not in r.out
    assert data_file.read_text() == "not a folder"


def test_importing_into_a_data_dir_that_is_a_file(data_file, run, tiny_model):
    r = run("models", "import", "mine", tiny_model.model, tiny_model.mmproj)
    assert r.rc == 2 and f"the model library cannot be used: {data_file} is a file" in r.err
