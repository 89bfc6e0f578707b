"""Fault catalogue, part 10: a FIFO, ``/dev/zero`` or a huge file where Duet reads or writes a file.

Opening a FIFO blocks until a writer comes (forever); ``/dev/zero`` never ends; a file of gigabytes
read whole exhausts the memory. Each of these hung Duet before. Now only regular files are read,
each kind up to its own bound (``app/core/bounded.py``), and an ``--out`` that is not a regular file
is refused. Every case has a deadline: a hang fails it instead of stalling the suite.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from app.core.sessions import load_session
from app.core.settings import Settings, SettingsStore
from tests.core.saved_session import write_session

pytestmark = pytest.mark.timeout(60)


def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def _dev_zero(path: Path) -> Path:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    return path


SPECIAL = {"a FIFO": (_fifo, "is a FIFO (named pipe), not a regular file"),
           "a symlink to /dev/zero": (_dev_zero, "is a character device, not a regular file")}


@pytest.fixture
def saved(data_dir) -> Path:
    return write_session(["A red circle.", "A red circle."], frames_per_turn=1)


@pytest.mark.parametrize("case", SPECIAL)
def test_a_session_log_that_is_not_a_file_is_not_read(case, saved, run):
    make, words = SPECIAL[case]
    make(saved / "events.jsonl")
    r = run("sessions", "list")
    assert r.rc == 0
    assert f"{saved.name}  " in r.out
    assert f"events.jsonl cannot be read ({saved / 'events.jsonl'} {words}" in r.out
    s = load_session(saved)
    assert s.steps == [] and "events.jsonl cannot be read" in (s.problem or "")
    for args in (["show", saved.name], ["feedback", saved.name, "--at", "2", "--kind", "good"]):
        r = run("sessions", *args)
        assert r.rc == 2 and f"no saved session {saved.name!r}" in r.err  # no file for a log: no session


@pytest.mark.parametrize("case", SPECIAL)
def test_a_meta_json_that_is_not_a_file_is_set_aside(case, saved):
    make, words = SPECIAL[case]
    make(saved / "meta.json")
    s = load_session(saved)
    assert len(s.steps) == 2 and s.problem.startswith("meta.json is damaged")
    assert not (saved / "meta.json").exists() and list(saved.glob("meta.corrupt-*.json"))


def test_an_over_long_line_is_skipped_without_holding_it(saved):
    """A 3 MiB line (no record is more than a few KB) is damage; the records after it are kept."""
    log = saved / "events.jsonl"
    whole = log.read_bytes()
    log.write_bytes(whole[:100] + b"x" * (3 << 20) + b"\n" + whole[whole.index(b"\n") + 1:])
    s = load_session(saved)
    assert s.damaged_lines == 1 and [st["turn"] for st in s.steps] == [1] and s.ended == "ended"


def test_a_session_log_larger_than_its_bound_is_read_up_to_it(saved, monkeypatch):
    from app.core import session_read

    monkeypatch.setattr(session_read, "LOG_MAX_BYTES", 600)
    s = load_session(saved)
    assert s.problem == ("events.jsonl is larger than 600 B; only its beginning was read; "
                         "1 damaged record(s) skipped")
    assert 0 < len(s.steps) < 2  # the whole records within the bound are kept; the one cut by it is damage


@pytest.mark.parametrize("case", [*SPECIAL, "a 2 MB file"])
def test_settings_that_are_not_a_settings_file_are_set_aside(case, tmp_path, caplog):
    store = SettingsStore(tmp_path)
    if case == "a 2 MB file":
        store.path.write_text("# padding\n" * 200_000)
        words = "is larger than 1.0 MB"
    else:
        make, words = SPECIAL[case]
        make(store.path)
    with caplog.at_level(logging.WARNING, logger="duet.settings"):
        assert store.load() == Settings()
    assert words in caplog.text and "using defaults" in caplog.text
    assert store.recovered_from is not None and not store.path.exists()
    store.save(Settings())  # and a fresh file can be written
    assert SettingsStore(tmp_path).load() == Settings()


@pytest.mark.parametrize("case", SPECIAL)
def test_a_library_index_that_is_not_a_file_is_set_aside(case, run, data_dir, tiny_model):
    make, words = SPECIAL[case]
    (data_dir / "models").mkdir(parents=True)
    make(data_dir / "models" / "library.json")
    r = run("models", "list")
    assert r.rc == 0 and "is damaged" in r.err and words in r.err
    assert run("models", "import", "mine", tiny_model.model, tiny_model.mmproj).rc == 0


@pytest.mark.parametrize("case", SPECIAL)
def test_a_pull_state_that_is_not_a_file_is_ignored(case, data_dir):
    from app.modelhub.library import ModelLibrary
    from app.modelhub.pull import PullJob, pending_pulls

    make, _ = SPECIAL[case]
    lib = ModelLibrary(data_dir / "models")
    job = PullJob("duet/tiny-gguf", library=lib)
    job.work.mkdir(parents=True)
    make(job.state_path)
    assert pending_pulls(lib) == []
    job._load_state()  # a resumed pull starts from a fresh state instead of waiting on the FIFO
    assert job.state["repo"] == "duet/tiny-gguf" and job.state["verified"] == []


@pytest.mark.parametrize("case", ["a FIFO", "/dev/zero", "a folder"])
def test_an_out_path_that_is_not_a_regular_file_is_refused(case, saved, run, tmp_path):
    if case == "a FIFO":
        out, words = _fifo(tmp_path / "out.md"), "is a FIFO (named pipe), not a regular file"
    elif case == "/dev/zero":
        out, words = Path("/dev/zero"), "is a character device, not a regular file"
    else:
        out, words = tmp_path, "is a folder, not a regular file"
    r = run("sessions", "export", saved.name, "--format", "md", "--out", out)
    assert r.rc == 2 and f"--out {out} {words}; give the path of a file to write" in r.err
    assert Path("/dev/zero").is_char_device()
    if case == "a FIFO":
        assert out.is_fifo()  # not replaced by the export either
    # A regular file (new, or there before) is written atomically, whole, private.
    good = tmp_path / "s.json"
    good.write_text("old")
    assert run("sessions", "export", saved.name, "--format", "json", "--out", good).rc == 0
    assert json.loads(good.read_text())["id"] == saved.name


def test_a_mark_refuses_a_log_that_is_not_a_file(saved):
    """The Sessions page marks through add_mark: a FIFO in the log's place is refused, not written to."""
    from app.core import feedback as fbk
    from app.core.bounded import UnsafeFile
    from app.core.sessions import add_mark

    _fifo(saved / "events.jsonl")
    with pytest.raises(UnsafeFile, match="is a FIFO"):
        add_mark(saved, fbk.Feedback("good", 2.0, 0))
    assert (saved / "events.jsonl").is_fifo()


@pytest.mark.parametrize("case", SPECIAL)
def test_a_serve_key_file_that_is_not_a_file_is_refused(case, run, data_dir, tiny_model, tmp_path):
    """`duet serve --api-key-file` at a FIFO blocked the start for ever; /dev/zero never ended."""
    make, words = SPECIAL[case]
    key = make(tmp_path / "serve-api-key")
    r = run("serve", "--model", tiny_model.model, "--mmproj", tiny_model.mmproj, "--api-key-file", key,
            "--port", "0")
    assert r.rc == 2 and f"{key} {words}" in r.err, r.err


@pytest.mark.parametrize("case", ["a FIFO", "/dev/zero"])
def test_run_jsonl_that_is_not_a_regular_file_is_refused(case, run, data_dir, vtest_avi, tmp_path):
    """`duet run --jsonl FIFO` blocked at the open until a reader came (for ever); /dev/zero swallowed it."""
    if case == "a FIFO":
        out, words = _fifo(tmp_path / "steps.jsonl"), "is a FIFO (named pipe), not a regular file"
    else:
        out, words = Path("/dev/zero"), "is a character device, not a regular file"
    r = run("run", "--source", vtest_avi, "--model", "tiny", "--fast", "--max-turns", "1", "--jsonl", out)
    assert r.rc == 2 and f"--jsonl {out} {words}; give the path of a file to write" in r.err, r.err


@pytest.mark.parametrize("case", ["a FIFO", "/dev/zero"])
def test_quantize_out_that_is_not_a_regular_file_is_refused(case, run, data_dir, tiny_model, tmp_path):
    """Even with --overwrite: the rename would have replaced a FIFO (or tried /dev/zero)."""
    if case == "a FIFO":
        out, words = _fifo(tmp_path / "q.gguf"), "is a FIFO (named pipe), not a regular file"
    else:
        out, words = Path("/dev/zero"), "is a character device, not a regular file"
    r = run("models", "quantize", tiny_model.model, "--type", "Q8_0", "--out", out, "--overwrite")
    assert r.rc == 2 and f"--out {out} {words}" in r.err, r.err
    assert out.is_fifo() or out.is_char_device()


def test_convert_out_that_is_not_a_folder_is_refused(run, data_dir, tiny_model, tmp_path):
    out = _fifo(tmp_path / "out")
    r = run("models", "convert", tiny_model.hf_dir, "--out", out)
    assert r.rc == 2 and f"--out {out}: exists and is not a folder; give a folder to write the pair into" in r.err
    assert out.is_fifo()


@pytest.mark.parametrize("case", SPECIAL)
def test_a_checkpoint_config_that_is_not_a_file_is_refused(case, run, data_dir, hf_copy, tmp_path):
    make, words = SPECIAL[case]
    make(hf_copy / "config.json")
    r = run("models", "convert", hf_copy, "--out", tmp_path / "gguf")
    assert r.rc == 2 and f"{hf_copy / 'config.json'} {words}" in r.err, r.err
