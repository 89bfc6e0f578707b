"""The Models page: this machine, installed models, models to download, and importing a GGUF pair.

Downloads are :class:`app.modelhub.jobs.PullProcess` children owned by the app-wide manager, not by
this page: the page polls their status, so closing or rebuilding it loses nothing and a pull keeps
going (or stays paused) until the app quits. Pause stops the child; resume starts a new one that
continues from the pull's state file. Importing validates the pair's metadata first (``check_pair``:
llama.cpp would abort the process on some mismatches) and copies the files in a background thread.

Layout: the page scrolls rather than squeezing; the installed-models table keeps room for several
compact one-line rows (full paths in the tooltip), its buttons sit in its header row, and a download
row keeps its height whether its progress bar shows or not, so nothing moves under the pointer as
downloads come and go. Speeds below 1 MB/s read in KB/s; until the pull's own rate has two samples
the page estimates speed and time left from what it saw since the download started.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import describe
from app.core.sizes import human_bytes
from app.core.timefmt import clock
from app.modelhub import catalog, hardware
from app.modelhub.jobs import JobStatus, PullManager, manager
from app.modelhub.library import ModelLibrary
from app.modelhub.pull import QUANTS, default_name
from app.modelhub.validate import ModelFileError, check_pair
from app.ui.background import BackgroundOp


def _size(path: Path) -> str:
    try:
        return human_bytes(path.stat().st_size)
    except OSError:
        return "missing"


TABLE_ROWS = 5  # installed models the table shows without scrolling


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


class ModelPage(QWidget):
    """``changed`` fires when the library changes; ``default_chosen(name)`` when the user sets a default."""

    changed = Signal()
    default_chosen = Signal(str)
    removed = Signal(str)  # a model the user deleted (emitted before ``changed``): the window picks another

    def __init__(self, library: ModelLibrary, jobs: PullManager | None = None,
                 hw: hardware.Hardware | None = None) -> None:
        super().__init__()
        self.library = library
        self.jobs = jobs or manager()
        self.hw = hw or hardware.detect()
        self.rec = hardware.recommend(self.hw)
        self._last_state: dict[str, str] = {}
        self._speed: dict[str, SpeedEstimate] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()  # a small window scrolls the page instead of squeezing the table to one row
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setObjectName("pageScroll")  # the stylesheet keeps it dark (app/ui/style.py)
        content = QWidget()
        content.setObjectName("modelPage")
        scroll.setWidget(content)
        outer.addWidget(scroll)
        lay = QVBoxLayout(content)
        lay.setContentsMargins(16, 16, 16, 16)

        title = QLabel("THIS MACHINE")
        title.setObjectName("sectionTitle")
        lay.addWidget(title)
        lines = hardware.describe(self.hw)
        lines.append(f"Recommended for MMDuet2: {self.rec.quant} on {self.rec.device}, "
                     f"{self.rec.tokens_per_frame} tokens a frame, a frame every {self.rec.interval:g} s")
        hint = hardware.switch_hint(self.hw)
        if hint:
            lines.append(hint)
        self.machine = QLabel("\n".join(lines))
        self.machine.setWordWrap(True)
        self.machine.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.machine)

        # The table's buttons sit in its header row: above the table, nothing that grows or shrinks
        # further down the page (a download row, a message) can move them.
        row = QHBoxLayout()
        title = QLabel("INSTALLED MODELS")
        title.setObjectName("sectionTitle")
        row.addWidget(title)
        row.addStretch(1)
        self.default_button = QPushButton("Use by default")
        self.default_button.setToolTip("The model the Watch tab starts with")
        self.default_button.clicked.connect(self.set_default)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Remove the model from the library and delete its files")
        self.delete_button.clicked.connect(self.delete_selected)
        row.addWidget(self.default_button)
        row.addWidget(self.delete_button)
        lay.addLayout(row)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Name", "Kind", "Size", "Files"])
        header = self.table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft)
        rows = self.table.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # compact one-line rows
        rows.setDefaultSectionSize(self.table.fontMetrics().height() + 10)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setMinimumHeight(header.sizeHint().height() + TABLE_ROWS * rows.defaultSectionSize()
                                    + 2 * self.table.frameWidth() + 2)
        lay.addWidget(self.table, 1)
        self.library_message = QLabel()
        self.library_message.setWordWrap(True)
        lay.addWidget(self.library_message)

        hub = QGroupBox("Download from Hugging Face")
        hub_lay = QVBoxLayout(hub)
        self.hub_box = hub
        self.pull_rows: dict[str, dict[str, QWidget]] = {}
        for item in catalog.CATALOG:
            self._add_pull_row(hub_lay, item.repo, item.title, item.about)
        self.jobs.adopt_pending(library)  # pulls an earlier run left unfinished: shown paused, ready to resume
        self._other_rows: list[str] = [r for r in self.jobs.jobs if r not in self.pull_rows]
        other = QHBoxLayout()
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("Another repository: owner/name (a Qwen2.5-VL checkpoint or a GGUF + mmproj)")
        other.addWidget(self.repo_edit, 1)
        other_button = QPushButton("Download")
        other_button.clicked.connect(self._pull_other)
        other.addWidget(other_button)
        hub_lay.addLayout(other)
        self.other_box = hub_lay
        for repo in self._other_rows:
            self._add_pull_row(hub_lay, repo, repo.split("/")[-1], "")
        lay.addWidget(hub)

        box = QGroupBox("Import a GGUF model + its mmproj")
        form = QVBoxLayout(box)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Name in the library, e.g. mmduet2-q4")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Text model (.gguf)")
        self.mmproj_edit = QLineEdit()
        self.mmproj_edit.setPlaceholderText("Vision projector (mmproj-*.gguf)")
        for edit, caption in ((self.model_edit, "Model…"), (self.mmproj_edit, "mmproj…")):
            r = QHBoxLayout()
            r.addWidget(edit, 1)
            b = QPushButton(caption)
            b.clicked.connect(lambda _=False, e=edit: self._browse(e))
            r.addWidget(b)
            form.addLayout(r)
        r = QHBoxLayout()
        r.addWidget(self.name_edit, 1)
        self.import_button = QPushButton("Validate and import")
        self.import_button.setObjectName("primary")
        self.import_button.clicked.connect(self.start_import)
        r.addWidget(self.import_button)
        form.addLayout(r)
        self.message = QLabel()
        self.message.setWordWrap(True)
        form.addWidget(self.message)
        lay.addWidget(box)

        self._timer = QTimer(self)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self._poll_jobs)
        self._timer.start()
        self.refresh()
        self._poll_jobs()

    # ---- downloads ----------------------------------------------------------------------------
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
            self.jobs.start(repo, quant, library=self.library)
        except Exception as e:  # a bad name or quantization: say so on the row
            row["status"].setText(f"✗ {e}")  # type: ignore[attr-defined]
            return
        self._poll_jobs()

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
            self.library_message.setText("✗ A repository is owner/name")
            return
        if repo not in self.pull_rows:
            self._add_pull_row(self.other_box, repo, repo.split("/")[-1], "")
        self.start_pull(repo)

    def _poll_jobs(self) -> None:
        for repo, row in self.pull_rows.items():
            job = self.jobs.get(repo)
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
                    self.refresh()
                    self.changed.emit()
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
                self.refresh()
                self.changed.emit()
            self._last_state[repo] = st.state

    # ---- installed models ---------------------------------------------------------------------
    def refresh(self) -> None:
        rows: list[tuple[str, str, str, str, str]] = []  # name, kind, size, files (one line), files (tooltip)
        demo = self.library.get("demo")
        files = f"{demo.model.name} + {demo.mmproj.name} — {demo.model.parent}" if demo else \
            "not built yet: run `duet train demo`"
        rows.append(("demo", "offline demo model", _size(demo.model) if demo else "—", files,
                     f"{demo.model}\n{demo.mmproj}" if demo else files))
        for e in self.library.entries():
            if e.name == "demo":
                continue
            kind = e.source + (f" · {e.notes}" if e.notes else "")
            rows.append((e.name, kind, _size(e.model), f"{e.model.name} + {e.mmproj.name} — {e.model.parent}",
                         f"{e.model}\n{e.mmproj}"))
        self.table.clearSelection()  # a row index now names another model: Delete must not hit that one
        self.table.setRowCount(len(rows))
        for r, (*values, tip) in enumerate(rows):
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                item.setToolTip(tip)
                self.table.setItem(r, c, item)

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).text() if rows else None

    def set_default(self) -> None:
        name = self.selected_name()
        if name is None:
            self.library_message.setText("Select a model first")
            return
        self.default_chosen.emit(name)
        self.library_message.setText(f"✓ {name} is the default model")

    def delete_selected(self) -> None:
        name = self.selected_name()
        if name is None or name in ("tiny", "demo"):
            self.library_message.setText("Select a downloaded or imported model to delete")
            return
        answer = QMessageBox.question(self, "Delete model", f"Delete “{name}” and its files from the library?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            self.library.remove(name, delete_files=True)
        except ModelFileError as e:
            self.library_message.setText(f"✗ {e}")
            return
        self.library_message.setText(f"Deleted {name}")
        self.refresh()
        self.removed.emit(name)  # first: the window stops offering it before the list is refilled
        self.changed.emit()

    # ---- import ---------------------------------------------------------------------------------
    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF file", edit.text(), "GGUF (*.gguf);;All files (*)")
        if path:
            edit.setText(path)
            if edit is self.model_edit and not self.name_edit.text():
                self.name_edit.setText(Path(path).stem.lower())

    def start_import(self) -> None:
        name = self.name_edit.text().strip()
        model, mmproj = self.model_edit.text().strip(), self.mmproj_edit.text().strip()
        if not (name and model and mmproj):
            self.message.setText("Give a name, the model file and its mmproj file.")
            return
        try:
            check_pair(model, mmproj)  # metadata only: fast, and errors belong right here
        except ModelFileError as e:
            self.message.setText(f"✗ {e}")
            return
        self.message.setText("✓ The pair is valid. Copying into the library…")
        self.import_button.setEnabled(False)

        BackgroundOp(self, lambda: self.library.add(name, model, mmproj, source="imported"),
                     success=lambda _entry: self._imported(name),
                     failure=lambda e: self._import_failed(describe(e)), name="duet-import").run()

    def _imported(self, name: str) -> None:
        self.import_button.setEnabled(True)
        self.message.setText(f"✓ Imported “{name}”. Choose it in the Watch tab.")
        self.refresh()
        self.changed.emit()

    def _import_failed(self, msg: str) -> None:
        self.import_button.setEnabled(True)
        self.message.setText(f"✗ {msg}")
