"""Pulls running in the background for the GUI: a child process each, owned by the app, not by a page.

Why a child process (``duet models pull … --json``) rather than a thread: conversion holds gigabytes
and cannot be interrupted mid-tensor, but a process can always be stopped; pausing is stopping it
(every stage is resumable, :mod:`app.modelhub.pull`), so pause, resume and cancel are the same
operations the CLI user has, and a crash in the converter or llama.cpp's quantizer costs the pull,
not the app. The manager is a module-level singleton so a page can be closed and reopened (or
rebuilt) and find its jobs still running with their latest progress.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


class PullProcess:
    """One pull in a child process; ``listeners`` are called from a reader thread with the status."""

    def __init__(self, repo: str, quant: str, name: str | None = None, revision: str = "main",
                 library: ModelLibrary | None = None) -> None:
        self.library = library or ModelLibrary()
        self.job = PullJob(repo, revision=revision, quant=quant, name=name, library=self.library)
        self.status = JobStatus(repo, self.job.quant, self.job.name)
        self.revision = revision
        self.listeners: list[Callable[[JobStatus], None]] = []
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _cmd(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", "models", "pull", self.job.repo, "--revision", self.revision,
                "--quant", self.job.quant, "--name", self.job.name, "--json"]

    def _notify(self) -> None:
        for fn in list(self.listeners):
            fn(self.status)

    def start(self) -> None:
        """Start, or resume after a pause or a failure (the child continues where the last one stopped)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            env = dict(os.environ)
            env["DUET_DATA_DIR"] = str(self.library.root.parent)  # the child must fill this very library
            root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            self._proc = subprocess.Popen(self._cmd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env, start_new_session=True)
            self.status.state, self.status.error = "running", ""
        threading.Thread(target=self._read, args=(self._proc,), name="duet-pull-reader", daemon=True).start()
        self._notify()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        err_lines: list[str] = []
        t = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        t.start()
        for line in proc.stdout:
            if line.startswith("{"):
                try:
                    self.status.last = PullEvent(**json.loads(line))
                except (TypeError, json.JSONDecodeError):
                    continue
                self.status.log.append(self.status.last.message)
                self._notify()
        rc = proc.wait()
        t.join(timeout=5)
        with self._lock:
            if self.status.state in ("paused", "cancelled"):
                pass
            elif rc == 0:
                self.status.state = "done"
            else:
                self.status.state = "failed"
                msg = [ln.strip() for ln in err_lines if ln.startswith("duet: error:")]
                self.status.error = (msg[-1].removeprefix("duet: error:").strip() if msg else
                                     "".join(err_lines[-5:]).strip() or f"the pull stopped (exit code {rc})")
        self._notify()

    def _stop(self, state: str) -> None:
        with self._lock:
            self.status.state = state
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # every stage resumes from its state file; nothing half-written is kept
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pause(self) -> None:
        self._stop("paused")
        self._notify()

    def cancel(self) -> None:
        """Stop and delete what was downloaded so far; the library is untouched."""
        self._stop("cancelled")
        self.job.cancel_cleanup()
        self._notify()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


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
        """Pulls left unfinished by an earlier run of the app (or a killed CLI), shown as paused."""
        out = []
        for p in pending_pulls(library):
            if p["repo"] in self.jobs:
                continue
            try:
                job = PullProcess(p["repo"], p["quant"], p["name"], revision=p["revision"], library=library)
            except PullError:
                continue
            job.status.state = "paused"
            self.jobs[p["repo"]] = job
            out.append(job)
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
