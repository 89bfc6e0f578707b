"""The Models page's downloads: one row per catalog model (and per other repository asked for), each with
its quantization, Download/Resume, Pause, Cancel, a progress bar and a status line.

Downloads are :class:`app.modelhub.jobs.PullProcess` children owned by the app-wide manager, not by
this box: on each tick of a :class:`~app.ui.job_watcher.JobWatcher` (polling only while a pull runs) it
reads what each pull's child reported (``update()``) and shows it, so closing or rebuilding the page loses
nothing and a pull keeps going (or stays paused) until the app quits. Pause stops the child; resume starts a
new one that continues from the pull's state file. A row keeps its height whether its progress bar shows or
not, so nothing moves under the pointer as downloads come and go. Speeds below 1 MB/s read in KB/s; until the pull's own rate has two samples the
row estimates speed and time left from what it saw since the download started.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.core.sizes import human_bytes
from app.core.timefmt import clock
from app.modelhub import catalog, hardware
from app.modelhub.jobs import JobStatus, PullManager
from app.modelhub.library import ModelLibrary
from app.modelhub.pull import QUANTS, default_name
from app.ui.job_watcher import JobWatcher


def human_rate(bytes_per_s: float) -> str:
    """``40_000`` → ``"40 KB/s"``; ``2_500_000`` → ``"2.5 MB/s"`` (a slow link never reads "0.0 MB/s")."""
    if bytes_per_s >= 1e6:
        return f"{bytes_per_s / 1e6:.1f} MB/s"
    if bytes_per_s >= 1e3:
        return f"{bytes_per_s / 1e3:.0f} KB/s"
    return f"{bytes_per_s:.0f} B/s"


class SpeedEstimate:
    """Speed of a pull as this page saw it, for the seconds before the pull reports a rate of its own.

    Why: the pull's rate needs two progress reports, and progress comes in 1 MB pieces — at 40 KB/s
    the second report is 25 s after the first. The page knows when it started (or resumed) the pull
    and how many bytes were there then, so the first report already gives a speed and a time left.
    """

    def __init__(self, done: int | None, at: float | None = None) -> None:
        """``done``: bytes already there when the pull (re)started; None when unknown (the first report counts)."""
        self.base = None if done is None else (time.monotonic() if at is None else at, done)

    def rate(self, done: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self.base is None:
            self.base = (now, done)
            return 0.0
        t0, d0 = self.base
        return (done - d0) / (now - t0) if done > d0 and now > t0 else 0.0


def describe_status(st: JobStatus, *, rate: float | None = None, eta: float | None = None) -> str:
    """One line for a pull: stage, bytes, speed and ETA while downloading; the message otherwise.

    ``rate``/``eta``: the page's estimate, used while the pull's own report has none.
    """
    ev = st.last
    if st.state == "failed":
        return f"✗ {st.error}"
    if st.state == "paused":
        return "❚❚ Paused — Resume continues where it stopped"
    if st.state == "cancelled":
        return "Cancelled; the partial download was deleted"
    if ev is None:
        return "Starting…"
    if st.state == "done":
        return f"✓ {st.name} is installed"
    if ev.stage in ("download", "verify") and ev.total:
        speed = ev.rate or rate or 0.0
        left = ev.eta if ev.eta is not None else eta
        if left is None and speed > 0:
            left = max(0.0, ev.total - ev.done) / speed
        pace = human_rate(speed) if speed > 0 else "measuring speed…"
        tail = f", about {clock(left)} left" if left is not None else ""
        return f"Downloading {human_bytes(ev.done)} of {human_bytes(ev.total)} · {pace}{tail}"
    return ev.message



class DownloadList(QGroupBox):
    """"Download from Hugging Face": the rows, and a field for another repository.

    ``installed`` fires when a pull finishes (the library has a new model); ``problem(text)`` when a
    request cannot be started at all (the page shows it by the installed models).
    """

    installed = Signal()
    problem = Signal(str)

    def __init__(self, library: ModelLibrary, jobs: PullManager, hw: hardware.Hardware,
                 rec: hardware.Recommendation, *, poll_ms: int = 300) -> None:
        super().__init__("Download from Hugging Face")
        self.library, self.jobs, self.hw, self.rec = library, jobs, hw, rec
        self._last_state: dict[str, str] = {}
        self._speed: dict[str, SpeedEstimate] = {}
        self.watcher = JobWatcher(self, interval_ms=poll_ms)
        self.watcher.tick.connect(self._poll_jobs)
        self.lay = QVBoxLayout(self)
        self.pull_rows: dict[str, dict[str, QWidget]] = {}
        for item in catalog.CATALOG:
            self._add_pull_row(self.lay, item.repo, item.title, item.about)
        self.jobs.adopt_pending(library)  # pulls an earlier run left unfinished: shown paused, ready to resume
        other = QHBoxLayout()
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("Another repository: owner/name (a Qwen2.5-VL checkpoint or a GGUF + mmproj)")
        other.addWidget(self.repo_edit, 1)
        other_button = QPushButton("Download")
        other_button.clicked.connect(self._pull_other)
        other.addWidget(other_button)
        self.lay.addLayout(other)
        for repo in [r for r in self.jobs.jobs if r not in self.pull_rows]:
            self._add_pull_row(self.lay, repo, repo.split("/")[-1], "")
        for repo, job in self.jobs.jobs.items():  # the first-run wizard's pull, or one a closed page left running
            self.watcher.jobs[repo] = job
        self.watcher.poll()

    def _add_pull_row(self, parent: QVBoxLayout, repo: str, title: str, about: str) -> None:
        head = QHBoxLayout()
        label = QLabel(f"<b>{title}</b> — {repo}<br>{about}")
        label.setWordWrap(True)
        head.addWidget(label, 1)
        quant = QComboBox()
        for q in QUANTS:
            item = next((c for c in catalog.CATALOG if c.repo == repo), None)
            size = f" · {human_bytes(item.size(q))}" if item else ""
            where = catalog.fits(self.hw, q)
            fit = {"GPU": "fits your GPU", "CPU": "fits your RAM (CPU)", "no": "does not fit"}[where]
            rec = " · recommended" if q == self.rec.quant else ""
            quant.addItem(f"{q}{size} · {fit}{rec}", q)
        quant.setCurrentIndex(max(0, quant.findData(self.rec.quant)))
        head.addWidget(quant)
        start = QPushButton("Download")
        start.setObjectName("primary")
        pause = QPushButton("Pause")
        cancel = QPushButton("Cancel")
        for b in (start, pause, cancel):
            head.addWidget(b)
        parent.addLayout(head)
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setTextVisible(False)
        policy = bar.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # the row keeps its height: nothing below it jumps
        bar.setSizePolicy(policy)
        status = QLabel("")
        status.setWordWrap(True)
        status.setMinimumHeight(status.fontMetrics().lineSpacing() * 2)  # room for a two-line message
        status.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        parent.addWidget(bar)
        parent.addWidget(status)
        widgets = {"quant": quant, "start": start, "pause": pause, "cancel": cancel, "bar": bar, "status": status}
        self.pull_rows[repo] = widgets
        start.clicked.connect(lambda _=False, r=repo: self.start_pull(r))
        pause.clicked.connect(lambda _=False, r=repo: self.pause_pull(r))
        cancel.clicked.connect(lambda _=False, r=repo: self.cancel_pull(r))

    def start_pull(self, repo: str) -> None:
        row = self.pull_rows[repo]
        quant = row["quant"].currentData()  # type: ignore[attr-defined]
        self._speed[repo] = SpeedEstimate(self._bytes_before(repo, quant))
        try:
            job = self.jobs.start(repo, quant, library=self.library)
        except Exception as e:  # a bad name or quantization: say so on the row
            row["status"].setText(f"✗ {e}")  # type: ignore[attr-defined]
            return
        self.watcher.watch(repo, job)

    def _bytes_before(self, repo: str, quant: str) -> int | None:
        """Bytes a (re)started pull begins with: 0 for a new one, the last report's for a resumed one."""
        job = self.jobs.get(repo)
        if job is None or job.status.state in ("done", "cancelled") or job.job.quant != str(quant).upper():
            return 0
        ev = job.status.last
        return ev.done if ev is not None and ev.stage in ("download", "verify") and ev.total else None

    def pause_pull(self, repo: str) -> None:
        job = self.jobs.get(repo)
        if job is not None:
            job.pause()
        self._poll_jobs()

    def cancel_pull(self, repo: str) -> None:
        job = self.jobs.get(repo)
        if job is not None:
            job.cancel()
        self._poll_jobs()

    def _pull_other(self) -> None:
        repo = self.repo_edit.text().strip()
        if repo.count("/") != 1:
            self.problem.emit("✗ A repository is owner/name")
            return
        if repo not in self.pull_rows:
            self._add_pull_row(self.lay, repo, repo.split("/")[-1], "")
        self.start_pull(repo)

    def confirm_close(self, parent: QWidget) -> bool:
        """Asked when the app closes while a model downloads: closing pauses it, and the user should know
        that nothing is lost and how it goes on. True: close (the caller pauses the downloads)."""
        running = [repo for repo, job in self.jobs.jobs.items() if job.running()]
        if not running:
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "A download is running",
                          f"Duet is downloading {', '.join(running)}.",
                          QMessageBox.StandardButton.Close | QMessageBox.StandardButton.Cancel, parent)
        box.setInformativeText("Closing Duet pauses the download; nothing downloaded so far is lost. The next time "
                               "Duet starts, the Models page shows it paused, and Resume continues where it "
                               "stopped.")
        box.button(QMessageBox.StandardButton.Close).setText("Pause and close")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box.exec() == QMessageBox.StandardButton.Close

    def _poll_jobs(self) -> None:
        """Show each row's job as it is now (the watcher's tick, and after every button)."""
        for repo, row in self.pull_rows.items():
            job = self.jobs.get(repo)
            if job is not None:
                job.update()  # what its child reported since the last look, and how it ended
            start, pause, cancel = row["start"], row["pause"], row["cancel"]
            bar, status = row["bar"], row["status"]
            installed = self.library.get(default_name(repo, row["quant"].currentData())) is not None  # type: ignore
            if job is None or (job.status.state in ("done", "cancelled") and installed):
                start.setText("Installed" if installed else "Download")  # type: ignore[attr-defined]
                start.setEnabled(not installed)
                pause.setEnabled(False)
                cancel.setEnabled(False)
                bar.setVisible(False)
                if job is not None:
                    status.setText(describe_status(job.status))  # type: ignore[attr-defined]
                    row["quant"].setEnabled(True)
                if job is not None and job.status.state == "done" and self._last_state.get(repo) != "done":
                    self._last_state[repo] = "done"
                    self.installed.emit()
                continue
            st = job.status
            running = st.state == "running"
            if st.state in ("running", "paused", "failed"):  # the row shows the job: Resume keeps its quantization
                quant = row["quant"]
                quant.setCurrentIndex(max(0, quant.findData(job.job.quant)))  # type: ignore[attr-defined]
            start.setText("Resume" if st.state in ("paused", "failed") else "Download")  # type: ignore[attr-defined]
            start.setEnabled(not running)
            pause.setEnabled(running)
            cancel.setEnabled(st.state in ("running", "paused", "failed"))
            row["quant"].setEnabled(st.state in ("done", "cancelled"))  # to change it: Cancel first
            bar.setVisible(st.state != "cancelled")
            ev = st.last
            if st.state == "done":
                bar.setValue(1000)  # type: ignore[attr-defined]
            elif ev is not None and ev.total:
                bar.setValue(int(1000 * ev.done / ev.total))  # type: ignore[attr-defined]
            rate = 0.0
            if running and ev is not None and ev.stage in ("download", "verify") and ev.total and not ev.rate:
                rate = self._speed.setdefault(repo, SpeedEstimate(None)).rate(ev.done)
            status.setText(describe_status(st, rate=rate))  # type: ignore[attr-defined]
            if st.state == "done" and self._last_state.get(repo) != "done":
                self.installed.emit()
            self._last_state[repo] = st.state
