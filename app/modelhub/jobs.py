"""Pulls running in the background for the GUI: a child process each, owned by the app, not by a page.

Why a child process (``duet models pull … --json``) rather than a thread: conversion holds gigabytes
and cannot be interrupted mid-tensor, but a process can always be stopped; pausing is stopping it
(every stage is resumable, :mod:`app.modelhub.pull`), so pause, resume and cancel are the same
operations the CLI user has, and a crash in the converter or llama.cpp's quantizer costs the pull,
not the app. The process is a :class:`~app.core.child_job.ChildJob` (as a training run is) in
``<library>/.pulls/.jobs/<key>/``: its JSON lines land in that folder's ``progress.jsonl`` and its stderr
in ``job.log``, and :meth:`PullProcess.update` reads them into the pull's status (no reader thread), so
a pull the app was not there to stop (a crash) is found running again on the next start. The manager is
a module-level singleton so a page can be closed and reopened (or rebuilt) and find its jobs still
running with their latest progress.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from app.core.child_job import ChildJob
from app.core.errors import describe
from app.modelhub.library import ModelLibrary
from app.modelhub.pull import PullError, PullEvent, PullJob, pending_pulls


@dataclass
class JobStatus:
    repo: str
    quant: str
    name: str
    state: str = "running"  # running | paused | failed | done | cancelled
    last: PullEvent | None = None
    error: str = ""
    log: list[str] = field(default_factory=list)


def jobs_dir(library: ModelLibrary) -> Path:
    """Where the pulls' child-process folders live (beside, not inside, the work folders a pull deletes)."""
    return library.root / ".pulls" / ".jobs"


class PullProcess:
    """One pull in a child process; :meth:`update` brings ``status`` up to date with what the child reported."""

    def __init__(self, repo: str, quant: str, name: str | None = None, revision: str = "main",
                 library: ModelLibrary | None = None) -> None:
        self.library = library or ModelLibrary()
        self.job = PullJob(repo, revision=revision, quant=quant, name=name, library=self.library)
        self.status = JobStatus(repo, self.job.quant, self.job.name)
        self.revision = revision
        self.child = ChildJob(jobs_dir(self.library) / self.job.work.name)

    def _cmd(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", "models", "pull", self.job.repo, "--revision", self.revision,
                "--quant", self.job.quant, "--name", self.job.name, "--json"]

    def start(self) -> None:
        """Start, or resume after a pause or a failure (the child continues where the last one stopped)."""
        if self.running():
            return
        env = dict(os.environ)
        env["DUET_DATA_DIR"] = str(self.library.root.parent)  # the child must fill this very library
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.child = ChildJob(self.child.folder)
        try:
            self.child.launch(self._cmd(), env=env, events_on_stdout=True)
        except OSError as e:  # a full disk or an unstartable Python: the row says so, the app goes on
            self.status.state, self.status.error = "failed", f"the pull could not start: {describe(e)}"
            return
        self.status.state, self.status.error = "running", ""

    def update(self) -> JobStatus:
        """Read what the child reported since the last look; once it has ended, how it ended."""
        running = self.running()  # before reading: what it wrote before exiting is read below
        for data in self.child.read_events():
            try:
                self.status.last = PullEvent(**data)
            except TypeError:
                continue
            self.status.log.append(self.status.last.message)
        if self.status.state == "running" and not running:
            rc = self.child.returncode()
            if rc == 0 or (rc is None and self.status.last is not None and self.status.last.stage == "done"):
                self.status.state = "done"
                self._forget_child()
            else:
                self.status.state = "failed"
                self.status.error = self.child.failure() or (
                    f"the pull stopped (exit code {rc})" if rc is not None else "the pull stopped")
        return self.status

    def pause(self) -> None:
        """Stop the child; every stage resumes from its state file, and nothing half-written is kept."""
        self.update()
        if self.status.state == "running":
            self.status.state = "paused"
        self.child.terminate()

    def cancel(self) -> None:
        """Stop and delete what was downloaded so far; the library is untouched."""
        self.status.state = "cancelled"
        self.child.terminate()
        self.job.cancel_cleanup()
        self._forget_child()

    def running(self) -> bool:
        return self.child.running()

    def _forget_child(self) -> None:
        """A finished or cancelled pull leaves nothing in ``.pulls`` (its events are in ``status`` by now)."""
        shutil.rmtree(self.child.folder, ignore_errors=True)
        try:
            self.child.folder.parent.rmdir()  # the last one out removes .jobs
        except OSError:
            pass


class PullManager:
    """The app's pulls by repository; outlives any page that shows them."""

    def __init__(self) -> None:
        self.jobs: dict[str, PullProcess] = {}

    def start(self, repo: str, quant: str, name: str | None = None, library: ModelLibrary | None = None
              ) -> PullProcess:
        job = self.jobs.get(repo)
        if job is None or job.status.state in ("done", "cancelled") or job.job.quant != quant.upper():
            if job is not None and job.running():
                job.pause()
            job = PullProcess(repo, quant, name, library=library)
            self.jobs[repo] = job
        job.start()
        return job

    def get(self, repo: str) -> PullProcess | None:
        return self.jobs.get(repo)

    def adopt_pending(self, library: ModelLibrary) -> list[PullProcess]:
        """Pulls left unfinished by an earlier run of the app (or a killed CLI): shown paused, or running
        when their child outlived that run (the app crashed); the folders of finished ones are removed."""
        out = []
        for p in pending_pulls(library):
            if p["repo"] in self.jobs:
                continue
            try:
                job = PullProcess(p["repo"], p["quant"], p["name"], revision=p["revision"], library=library)
            except PullError:
                continue
            job.status.state = "running" if job.running() else "paused"
            job.update()
            self.jobs[p["repo"]] = job
            out.append(job)
        live = {job.child.folder for job in self.jobs.values()}
        for folder in jobs_dir(library).glob("*"):
            if folder not in live and not (library.root / ".pulls" / folder.name).exists() \
                    and not ChildJob(folder).running():
                shutil.rmtree(folder, ignore_errors=True)
        return out

    def shutdown(self) -> None:
        """On quit: pause every running pull (it resumes on the next start)."""
        for job in self.jobs.values():
            if job.running():
                job.pause()


_MANAGER: PullManager | None = None


def manager() -> PullManager:
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = PullManager()
    return _MANAGER
