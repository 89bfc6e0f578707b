"""Pulls as child jobs (app/modelhub/jobs.py): the real `duet models pull --json` child against the stand-in hub.

What the Models page relies on beyond its own tests: the pull reports through its job folder (no reader
thread), a pull whose app went away is found again running, a failed pull says the child's own error, and a
finished or cancelled pull leaves nothing in ``.pulls``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.modelhub.jobs import PullManager, jobs_dir
from app.modelhub.library import ModelLibrary
from tests.modelhub.hub_server import hub_for_duet

SLOW = "duet/slow-gguf"


def _until(job, cond, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not cond(job.update()):
        assert time.monotonic() < deadline, f"timed out; the pull is {job.status}"
        time.sleep(0.05)
    return job.status


@pytest.fixture
def hub(monkeypatch, tiny_model):
    repos = {SLOW: {"m-q4_k_m.gguf": os.urandom(3 << 20), "mmproj-f16.gguf": os.urandom(4096)},
             "duet/tiny-gguf": {"tiny-f32.gguf": tiny_model.model.read_bytes(),
                                "mmproj-tiny-f32.gguf": tiny_model.mmproj.read_bytes()}}
    with hub_for_duet(repos, monkeypatch) as h:
        yield h


def test_a_pull_outliving_its_app_is_found_running_paused_from_there_and_fails_in_its_own_words(
        hub, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    hub.faults.rate = 300_000
    first = PullManager().start(SLOW, "Q4_K_M", library=library)
    _until(first, lambda st: st.last is not None and st.last.stage == "download" and st.last.done > 0)

    # The app that started it is gone (crashed); the next one finds the child still at work, with its history.
    again = PullManager()
    (found,) = again.adopt_pending(library)
    assert found.status.state == "running" and found.running()
    assert found.status.last is not None and found.status.last.stage == "download"
    assert "Looking up" in found.status.log[0]
    found.pause()
    assert found.status.state == "paused" and not found.running()
    first.child.wait(timeout=10)  # the original handle sees its child end (its zombie is reaped there)

    # Resume from there: the download continues, and the random bytes are no GGUF pair: the child's error shows.
    hub.faults.rate = 0
    again.start(SLOW, "Q4_K_M", library=library)
    st = _until(found, lambda st: st.state != "running")
    assert st.state == "failed" and "not a usable GGUF pair" in st.error, st.error
    assert not st.error.startswith("duet: error:") and "Traceback" not in st.error
    gets = [r for r in hub.faults.requests if "m-q4_k_m.gguf" in r and r.startswith("GET")]
    assert len(gets) == 2 and "Range: bytes=" in gets[1], "resumed, not restarted"


def test_a_finished_pull_is_done_and_leaves_nothing_in_pulls(hub, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    job = PullManager().start("duet/tiny-gguf", "F16", library=library)
    st = _until(job, lambda st: st.state != "running", timeout=120)
    assert st.state == "done", st.error
    assert st.last is not None and st.last.stage == "done"
    assert library.get(job.job.name) is not None
    assert not (library.root / ".pulls").exists() or list((library.root / ".pulls").iterdir()) == []


def test_cancel_stops_the_child_and_removes_its_folder(hub, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    hub.faults.rate = 200_000
    job = PullManager().start(SLOW, "Q4_K_M", library=library)
    _until(job, lambda st: st.last is not None and st.last.stage == "download")
    assert (jobs_dir(library) / job.job.work.name / "progress.jsonl").is_file()
    job.cancel()
    assert job.status.state == "cancelled" and not job.running()
    assert list((library.root / ".pulls").iterdir()) == []


def test_a_pull_that_cannot_start_says_why_and_the_app_goes_on(hub, tmp_path: Path) -> None:
    library = ModelLibrary(tmp_path / "data" / "models")
    library.root.mkdir(parents=True)
    (library.root / ".pulls").write_text("not a folder")  # its job folder cannot be made
    job = PullManager().start(SLOW, "Q4_K_M", library=library)
    assert job.status.state == "failed" and not job.running()
    assert job.status.error.startswith("the pull could not start:") and ".pulls" in job.status.error
