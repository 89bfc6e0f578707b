"""The one child-process job mechanism (app/core/child_job.py), with real child processes (``python -c``).

What pulls and training runs rely on: events read incrementally (by several handles, across a restart),
a job found again from its folder and told apart from a dead pid, a zombie or a pid given to another
program, stopping by signal or by the CANCEL file, and the child's own words when it fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.child_job import ChildJob, start_ticks

# Writes events to progress.jsonl itself (as a training job's Reporter does), one batch per "go" file.
WRITER = """
import json, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
with open(folder / "progress.jsonl", "a") as f:
    for batch in range(2):
        while not (folder / f"go{batch}").exists():
            time.sleep(0.02)
        f.write(json.dumps({"event": "step", "step": batch}) + "\\n")
        f.write('{"event": "half')  # a line being written: not read until it is whole
        f.flush()
        while not (folder / f"end{batch}").exists():
            time.sleep(0.02)
        f.write(f' {batch}"}}\\n')
        f.flush()
"""

SLEEPER = "import time; time.sleep(60)"


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def child(tmp_path: Path):
    jobs: list[ChildJob] = []

    def make(code: str, *args: str, events_on_stdout: bool = False) -> ChildJob:
        job = ChildJob(tmp_path / "job")
        job.launch([sys.executable, "-c", code, *args], events_on_stdout=events_on_stdout)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        if job.running():
            job.terminate(timeout=5)


def test_events_are_read_incrementally_whole_lines_only_and_across_handles(child, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    job = child(WRITER, str(folder))
    assert job.running() and job.read_events() == []
    (folder / "go0").touch()
    _wait(lambda: (folder / "progress.jsonl").exists() and b"half" in (folder / "progress.jsonl").read_bytes())
    first = job.read_events()
    assert first == [{"event": "step", "step": 0}], "the half-written line waits for its end"
    (folder / "end0").touch()
    _wait(lambda: (folder / "progress.jsonl").read_bytes().endswith(b"}\n"))
    assert job.read_events() == [{"event": "half 0"}]
    assert job.read_events() == [], "each event is read once by a handle"

    other = ChildJob(folder)  # another page, or the next start of the app: it reads the whole history
    assert [e["event"] for e in other.read_events()] == ["step", "half 0"]
    later = ChildJob(folder)
    later.continue_after(job)  # a job restarted in place: read on from where the earlier handle stopped
    (folder / "go1").touch()
    (folder / "end1").touch()
    job.wait(timeout=20)
    assert later.read_events() == [{"event": "step", "step": 1}, {"event": "half 1"}]
    assert not job.running() and job.returncode() == 0


def test_a_job_is_found_again_from_its_folder_and_stopped_from_there(child, tmp_path: Path) -> None:
    job = child(SLEEPER)
    info = job.info()
    assert info["pid"] == job.pid and info["argv"][-1] == SLEEPER and info["start_ticks"] == start_ticks(job.pid)
    found = ChildJob(tmp_path / "job")  # no Popen: only job.json and /proc
    assert found.running()
    found.terminate(timeout=5)
    assert job.wait(timeout=5) == -signal.SIGTERM
    assert not found.running() and not job.running()


def test_a_dead_pid_is_not_running(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: the pid names nothing now
    job = ChildJob(tmp_path / "job")
    job.folder.mkdir()
    (job.folder / "job.json").write_text(json.dumps({"pid": proc.pid, "argv": [sys.executable, "-c", "pass"]}))
    assert not job.running()
    assert not ChildJob(tmp_path / "nothing").running(), "no job.json: nothing runs"


def test_a_recycled_pid_running_another_program_is_not_the_job(tmp_path: Path) -> None:
    import os

    job = ChildJob(tmp_path / "job")
    job.folder.mkdir()
    me = os.getpid()  # alive, but not the job: as if the system had given the job's pid to this program
    record = {"pid": me, "argv": [sys.executable, "-m", "app.trainer.cli", "feedback", "--name", "x"]}
    (job.folder / "job.json").write_text(json.dumps({**record, "start_ticks": start_ticks(me) + 1}))
    assert not job.running(), "another start time: another process"
    (job.folder / "job.json").write_text(json.dumps(record))
    assert not job.running(), "no start time recorded (a job's own record): the command line must match"
    (job.folder / "job.json").write_text(json.dumps({**record, "start_ticks": start_ticks(me)}))
    assert job.running(), "the same pid and start time is the same process"


def test_a_zombie_is_not_running(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    try:
        job = ChildJob(tmp_path / "job")
        job.folder.mkdir()
        (job.folder / "job.json").write_text(json.dumps({"pid": proc.pid, "argv": argv,
                                                         "start_ticks": start_ticks(proc.pid)}))
        assert job.running()
        proc.stdin.close()  # it exits; nobody reaps it yet
        _wait(lambda: _state(proc.pid) == "Z")
        assert not job.running()
    finally:
        proc.wait()


def test_terminate_escalates_to_kill_when_the_child_ignores_sigterm(child) -> None:
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('{\"event\": \"ready\"}', flush=True); time.sleep(60)")
    job = child(code, events_on_stdout=True)
    _wait(lambda: job.read_events() == [{"event": "ready"}])
    t0 = time.monotonic()
    job.terminate(timeout=0.5)
    assert not job.running() and job.returncode() == -signal.SIGKILL
    assert time.monotonic() - t0 < 10


def test_cancel_file_asks_the_child_to_stop_and_a_new_launch_clears_it(child, tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path\n"
            "while not Path(sys.argv[1], 'CANCEL').exists(): time.sleep(0.02)\n"
            "sys.exit(130)")
    folder = tmp_path / "job"
    job = child(code, str(folder))
    job.request_stop()
    assert job.wait(timeout=20) == 130
    assert (folder / "CANCEL").exists()
    again = child(code, str(folder))
    assert not (folder / "CANCEL").exists() and again.running(), "the new run was not asked to stop"


def test_the_failure_is_the_childs_own_error_line_or_its_last_words(child, tmp_path: Path) -> None:
    code = ("import json, sys; print(json.dumps({'event': 'resolve'}), flush=True); print('not json'); "
            "print('a warning', file=sys.stderr); "
            "print('duet: error: the disk is full (writing /x). Free some space', file=sys.stderr); sys.exit(1)")
    job = child(code, events_on_stdout=True)
    assert job.wait(timeout=20) == 1
    assert job.read_events() == [{"event": "resolve"}], "stdout is the event stream; other lines are skipped"
    assert job.failure() == "the disk is full (writing /x). Free some space"

    crash = child("raise SystemExit('boom: no duet error line')", events_on_stdout=True)
    crash.wait(timeout=20)
    assert crash.failure() == "boom: no duet error line"
    assert crash.read_events() == [], "a new run with events on stdout starts a fresh progress file"

    # a job that writes its own progress file: both streams are kept, appended, in job.log
    logger = child("import sys; print('out'); print('duet: error: bad recipe', file=sys.stderr); sys.exit(2)")
    logger.wait(timeout=20)
    assert logger.failure() == "bad recipe" and "out" in logger.log_tail()
