"""Issue 28, item 5: one way the GUI follows child-process jobs (app/ui/job_watcher.py).

A real child process through the trainer's job API (the Train page's), writing progress as a training job
does: the watcher looks while it runs, reads what it wrote last before exiting, and then stops looking.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.trainer.jobs import JobProcess
from app.ui.job_watcher import JobWatcher

CHILD = """
import json, sys, time
with open(sys.argv[1], "a") as f:
    for step in range(5):
        f.write(json.dumps({"event": "step", "step": step}) + "\\n"); f.flush(); time.sleep(0.15)
    f.write(json.dumps({"event": "done", "stage": "demo"}) + "\\n")
"""


def test_the_watcher_follows_a_child_to_its_last_event_then_stops(qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    job = JobProcess.start([sys.executable, "-c", CHILD, str(folder / "progress.jsonl")], folder)
    events: list[dict] = []
    ticks: list[bool] = []
    watcher = JobWatcher(interval_ms=50)
    watcher.tick.connect(lambda: (ticks.append(job.running()), events.extend(job.read_events())))
    watcher.watch("training", job)
    assert watcher.active and ticks, "it looks at once, then on its timer while the job runs"
    qtbot.waitUntil(lambda: not watcher.active, timeout=20_000)
    assert not job.running()
    assert [e["event"] for e in events] == ["step"] * 5 + ["done"], "the last look read the last line"
    assert job.outcome(events) == "done"
    seen = len(ticks)
    qtbot.wait(300)
    assert len(ticks) == seen, "nothing is polled while nothing runs"
    assert ticks.count(True) >= 3, "it looked while the job ran"


def test_a_job_that_is_not_running_is_looked_at_once(qtbot, tmp_path: Path) -> None:
    watcher = JobWatcher(interval_ms=50)
    looks: list[int] = []
    watcher.tick.connect(lambda: looks.append(1))
    watcher.watch("old", JobProcess(tmp_path / "nothing-here"))
    assert looks == [1] and not watcher.active
