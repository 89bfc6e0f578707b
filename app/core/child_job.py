"""A child process the app starts, follows through JSON-lines events, may leave, finds again, and stops.

The app's long chores (a model pull, a training run) are child processes, not threads: a process can
always be stopped (conversion and training cannot be interrupted mid-tensor), a crash in native code costs
the chore and not the app, and the CLI user runs the very same command. This module is the one mechanism
both use; what differs (the command line, what an event means, pause vs cancel, cleanup) stays with them
(:mod:`app.modelhub.jobs`, :mod:`app.trainer.jobs`).

A job is known by its folder, so a handle can be dropped and another made later (another page, the next
start of the app) that finds the same process::

    <folder>/job.json        {"pid": ..., "argv": [...], "started": <unix time>, "start_ticks": ...}
    <folder>/progress.jsonl  one JSON object a line: the events, read incrementally by each handle
    <folder>/job.log         what the child printed that is not an event (its error message, a traceback)
    <folder>/CANCEL          present: the child is asked to stop at its next safe point

Events reach ``progress.jsonl`` in one of two ways: the child writes the file itself (a training job's
``Reporter``), or its stdout *is* the file (``events_on_stdout``: ``duet models pull --json``). Either way
the reader is the same and no thread is needed: the GUI reads on its watcher's tick.

Whether the process still runs is decided from ``job.json`` alone when this handle did not start it: the
pid must exist, not be a zombie, and be the same process (its start time in ``/proc`` matches the one
recorded, or, for a record without one, its command line holds the recorded argv's tail), so a pid the
system has since given to another program does not pass for the job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from app.core.atomic import write_json_atomic

LOG_TAIL_BYTES = 64 * 1024  # how much of job.log is read for the failure message
ERROR_MARKER = "duet: error:"  # how every `duet` command prints the error a person should read


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state is [0], start time is [19]); None off Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux); with the pid it names one process for good."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


class ChildJob:
    """One job folder and, while this handle started it, its process.

    Why a handle holds no more than an offset: every page (or app run) may make its own and read the
    same events; :meth:`continue_after` hands the reading position on when a job is restarted in place.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._popen: subprocess.Popen | None = None
        self._offset = 0

    # ---- files -------------------------------------------------------------------------------
    @property
    def progress_path(self) -> Path:
        return self.folder / "progress.jsonl"

    @property
    def log_path(self) -> Path:
        return self.folder / "job.log"

    @property
    def cancel_path(self) -> Path:
        return self.folder / "CANCEL"

    def info(self) -> dict[str, Any]:
        """``job.json`` as recorded ({} when missing or unreadable)."""
        try:
            data = json.loads((self.folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # ---- the process -------------------------------------------------------------------------
    def launch(self, argv: list[str], *, env: dict[str, str] | None = None, events_on_stdout: bool = False) -> None:
        """Start ``argv`` as this folder's process, in its own session (it outlives the app and its signals).

        ``events_on_stdout``: the child prints its events on stdout, which becomes a fresh ``progress.jsonl``
        (and stderr a fresh ``job.log``); otherwise the child writes ``progress.jsonl`` itself and both of its
        streams are appended to ``job.log``. A stale ``CANCEL`` is removed: this run was not asked to stop.
        Raises OSError when the folder cannot be written or the program cannot be started.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cancel_path.unlink(missing_ok=True)
        if events_on_stdout:
            with self.progress_path.open("wb") as out, self.log_path.open("wb") as err:
                self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                               start_new_session=True, env=env)
            self._offset = 0  # a new file: read it from its start
        else:
            with self.log_path.open("ab") as log:
                self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, env=env)
        pid = self._popen.pid
        write_json_atomic(self.folder / "job.json", {"pid": pid, "argv": argv, "started": time.time(),
                                                     "start_ticks": start_ticks(pid)})

    @property
    def pid(self) -> int | None:
        if self._popen is not None:
            return self._popen.pid
        pid = self.info().get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    def running(self) -> bool:
        """Whether the job's process is alive (and is the job's, not a zombie or a recycled pid)."""
        if self._popen is not None:
            return self._popen.poll() is None  # our own child: poll() also reaps it
        info = self.info()
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        fields = _proc_stat(pid)
        if fields is None:  # no /proc (macOS): the pid exists, which is all that can be known cheaply
            return True
        if not fields or fields[0] == "Z":
            return False
        recorded = info.get("start_ticks")
        if isinstance(recorded, int):
            return start_ticks(pid) == recorded
        try:  # a record without a start time (written by the job itself): its command line must match
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        argv = info.get("argv") or []
        return bool(argv) and all(str(a) in cmd for a in argv[-3:])

    def returncode(self) -> int | None:
        """The exit status when this handle started the process and it has ended; None otherwise."""
        return None if self._popen is None else self._popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end: its exit status if this handle started it, else None.

        Raises ``subprocess.TimeoutExpired`` when it still runs after ``timeout`` seconds.
        """
        if self._popen is not None:
            return self._popen.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.info().get("argv") or [], timeout or 0)
            time.sleep(0.05)
        return None

    def request_stop(self) -> None:
        """Leave ``CANCEL`` in the folder: a child that polls for it stops at its next safe point."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cancel_path.touch()

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM now, SIGKILL if it still runs after ``timeout`` s; returns once it has ended."""
        if not self.running():
            return
        self._signal(signal.SIGTERM)
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.wait(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            if self._popen is not None:
                self._popen.send_signal(sig)
            elif self.running():  # found again: only a pid that is still the job's is signalled
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ---- what it said ------------------------------------------------------------------------
    def continue_after(self, other: ChildJob) -> None:
        """Read on from where ``other`` (an earlier handle on the same folder) stopped."""
        self._offset = other._offset

    def read_events(self) -> list[dict[str, Any]]:
        """Events appended since this handle's last call: whole lines only, lines that are not JSON objects skipped."""
        try:
            with self.progress_path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def log_tail(self, limit: int = LOG_TAIL_BYTES) -> list[str]:
        """The last lines of ``job.log`` (at most ``limit`` bytes of it)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
                data = f.read()
        except OSError:
            return []
        return data.decode("utf-8", errors="replace").splitlines()

    def failure(self, marker: str = ERROR_MARKER) -> str:
        """Why the child failed, in its own words: its last ``marker`` line, else the last lines of its log."""
        lines = self.log_tail()
        said = [ln.strip() for ln in lines if ln.startswith(marker)]
        if said:
            return said[-1].removeprefix(marker).strip()
        return "\n".join(ln for ln in lines[-5:] if ln.strip()).strip()
