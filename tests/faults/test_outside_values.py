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

import pytest

from app.core.sessions import SessionStore, session_meta
from app.core.settings import Settings, SettingsStore
from app.core.types import Frame, StepResult
from tests.core.saved_session import write_session

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
    return write_session()


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


# ---- issue 24 #8: a checkpoint's config.json whose numbers would make the converter run for ever ----------
BAD_CONFIGS = {  # (path in config.json, value) → the message
    "vocab_size 10^12": (("text_config", "vocab_size"), 10**12,
                         "vocab_size = 1,000,000,000,000 is out of range; a Qwen2.5-VL checkpoint has 1 to 1,048,576"),
    "10^9 layers": (("text_config", "num_hidden_layers"), 10**9,
                    "num_hidden_layers = 1,000,000,000 is out of range; a Qwen2.5-VL checkpoint has 1 to 1,024"),
    "0 heads (a division by zero)": (("text_config", "num_attention_heads"), 0,
                                     "num_attention_heads = 0 is out of range"),
    "a vision depth of 10^9": (("vision_config", "depth"), 10**9, "vision_config.depth = 1,000,000,000 is out"),
    "a word for a number": (("text_config", "hidden_size"), "big", "a setting is not a number of the right kind"),
    "a list for a number": (("text_config", "vocab_size"), [1, 2], "a setting is not a number of the right kind"),
    "NaN epsilon": (("text_config", "rms_norm_eps"), float("nan"), "rms_norm_eps = nan must be a finite number > 0"),
    "a block index past the depth": (("vision_config", "fullatt_block_indexes"), [1, 10**9],
                                     "vision_config.fullatt_block_indexes must list whole numbers from 0 to 3"),
}


@pytest.mark.timeout(60)  # before the limits, the first two cases ran for ever
@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_config_with_absurd_sizes_is_refused_naming_the_field(case, hf_copy, run, data_dir, tmp_path):
    (section, key), value, message = BAD_CONFIGS[case]
    cfg = json.loads((hf_copy / "config.json").read_text())
    cfg[section][key] = value
    (hf_copy / "config.json").write_text(json.dumps(cfg))
    r = run("models", "convert", hf_copy, "--out", tmp_path / "gguf")
    assert r.rc == 2, r.err
    assert f"{hf_copy / 'config.json'}: {message}" in r.err
    assert not list((tmp_path / "gguf").glob("*")) if (tmp_path / "gguf").exists() else True


# ---- issue 24 #8: a correction of 120 KB made one training step take 374 s ---------------------------------
def test_an_over_long_correction_is_refused_with_the_cap(saved, run):
    before = (saved / "events.jsonl").read_bytes()
    r = run("sessions", "feedback", saved.name, "--at", "4", "--kind", "wrong", "--correction", "x" * 120_000)
    assert r.rc == 2
    assert "--correction may be at most 1,000 characters (what the model says in one turn), and this one has " \
           "120,000; write the sentence or two the model should have said" in r.err
    assert (saved / "events.jsonl").read_bytes() == before
    assert run("sessions", "feedback", saved.name, "--at", "4", "--kind", "wrong", "--correction", "y" * 1000).rc == 0


def test_an_over_long_mark_from_the_window_or_an_old_log_is_refused(saved):
    """The Sessions page and the chat mark through Feedback; a record written by hand is damage when read."""
    from app.core import feedback as fbk
    from app.core.sessions import load_session

    with pytest.raises(fbk.FeedbackError, match="a correction may be at most 1,000 characters"):
        fbk.Feedback("missed", 3.0, None, "z" * 1001)
    with open(saved / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"type": "feedback", "v": 2, "kind": "missed", "turn": None, "time": 3.0,
                             "text": "z" * 120_000, "to_time": None, "on": True}) + "\n")
    s = load_session(saved)
    assert s.marks == [] and s.damaged_lines == 1


@pytest.mark.timeout(300)
def test_training_data_refuses_a_session_turn_of_megabytes(data_dir, tree_avi):
    """A session saved from a server that ignored max_tokens holds a 480 KB reply: it is not trained on as is."""
    from app.core import feedback as fbk
    from app.core.sessions import add_mark, load_session
    from app.trainer.dialogue import DataError, read_turn_frames
    from app.trainer.session_dialogues import session_dialogue

    frames = read_turn_frames(tree_avi, 1.0, 2, 16)[:3]
    w = SessionStore().create(session_meta(str(tree_avi), "demo", interval=1.0, frames_per_turn=2,
                                           tokens_per_frame=16, talkativeness=0.0), durable=False)
    for i, f in enumerate(frames):
        text = "A tree. " * 60_000 if i == 1 else "NO REPLY"  # 480 KB (stripped: 479,999): a line the reader takes (< 1 MiB)
        w.add_step(StepResult(turn=i, video_time=f.time, text=text, silent=i != 1,
                              frames=tuple(Frame(im, time=f.time) for im in f.images)))
    w.close("ended")
    with pytest.raises(DataError) as e:
        session_dialogue(load_session(w.directory))
    assert f"the reply at {frames[1].time:g} s has 479,999 characters; a turn trains on at most 2,000" in str(e.value)
    # Marked 'wrong' with a correction, the turn trains on the correction: fine.
    add_mark(w.directory, fbk.Feedback("wrong", frames[1].time, 1, "A tree sways."))
    d = session_dialogue(load_session(w.directory))
    assert d.turns[1].target == "A tree sways."
