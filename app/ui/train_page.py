"""The Train page: your feedback (or a dataset) → a fine-tuned model, without leaving the app.

A thin shell over the Qt-free trainer: Start runs ``duet train feedback …`` as its own process
(``app.trainer.jobs.JobProcess``), so the job survives the window closing; the page polls the job's
``progress.jsonl`` while the job runs (:class:`~app.ui.job_watcher.JobWatcher`, as the Models page follows
its downloads) and draws the loss and reward curves, and on opening it reattaches to
the newest job in the training folder. Cancel leaves a ``CANCEL`` file (the job checkpoints and
exits); Resume runs the same command again, which continues from the checkpoint. "Use this model"
selects the new library entry for watching (from the next Start, no restart of the app).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.sessions import SessionStore, sessions_with_feedback
from app.trainer import estimate
from app.trainer.jobs import JobProcess
from app.ui.job_watcher import JobWatcher
from app.ui.train_curves import Curves

DATA_CHOICES = {"sessions": "My sessions with feedback", "folder": "A dataset folder (Duet or ProactiveVideoQA)",
                "synthetic": "Synthetic videos (the demo's world)"}
# preset → (label, SFT steps, GRPO steps)
PRESETS = {"quick": ("Quick: fine-tune on my feedback", 40, 0), "sft": ("SFT", 300, 0),
           "sft_grpo": ("SFT, then GRPO", 300, 16)}


class TrainPage(QWidget):
    """Data, preset, hardware check, start/cancel/resume, live curves, PAUC before/after, use the model."""

    use_model = Signal(str)

    def __init__(self, sessions: SessionStore, *, python: str | None = None, poll_ms: int = 400) -> None:
        super().__init__()
        self.sessions = sessions
        self.python = python or sys.executable
        self.job: JobProcess | None = None
        self.events: list[dict] = []
        self.pauc: dict[str, float | None] = {"before": None, "after": None}
        self._build()
        self.watcher = JobWatcher(self, interval_ms=poll_ms)
        self.watcher.tick.connect(self.poll)
        self.reattach()  # counting sessions and probing the GPU wait until the page is shown (app start stays fast)

    def showEvent(self, event: object) -> None:  # noqa: N802
        self.refresh()
        super().showEvent(event)  # type: ignore[arg-type]

    # ---- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.data_combo = QComboBox()
        for key, label in DATA_CHOICES.items():
            self.data_combo.addItem(label, key)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with dataset.jsonl (Duet) or a ProactiveVideoQA .json")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(browse)
        self.preset_combo = QComboBox()
        for key, (label, _, _) in PRESETS.items():
            self.preset_combo.addItem(label, key)
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        self.base_combo = QComboBox()
        self.base_combo.setEditable(True)
        self.base_combo.addItem("demo")
        self.base_combo.setToolTip("demo, a model trained here before, or the folder of Hugging Face weights "
                                   "(e.g. MMDuet2); the GGUF files in the library cannot be trained")
        self.name_edit = QLineEdit("my-duet")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(PRESETS["quick"][1])
        self.steps_spin.setToolTip("On your feedback: the steps of one round; after each round the new model plays "
                                   "your marked sessions, and training goes on until it says every correction")
        # The budget the user sees: training on feedback stops at the first of these, and says what was not learned.
        self.max_steps_spin = QSpinBox()
        self.max_steps_spin.setRange(1, 1_000_000)
        self.max_steps_spin.setValue(4 * PRESETS["quick"][1])
        self.max_steps_spin.setSuffix(" steps")
        self.max_minutes_spin = QSpinBox()
        self.max_minutes_spin.setRange(0, 100_000)
        self.max_minutes_spin.setSpecialValueText("no time limit")
        self.max_minutes_spin.setSuffix(" min")
        self.steps_spin.valueChanged.connect(self.max_steps_spin.setMinimum)
        self.max_steps_spin.setMinimum(self.steps_spin.value())
        self.max_steps_spin.setToolTip("Training on your feedback stops at the first of these, and says which "
                                       "corrections were not learned")
        budget_row = QHBoxLayout()
        budget_row.addWidget(QLabel("up to"))
        budget_row.addWidget(self.max_steps_spin)
        budget_row.addWidget(QLabel("and"))
        budget_row.addWidget(self.max_minutes_spin)
        form = QFormLayout()
        form.addRow("Data", self.data_combo)
        form.addRow("Dataset folder", folder_row)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Start from", self.base_combo)
        form.addRow("New model name", self.name_edit)
        form.addRow("SFT steps", self.steps_spin)
        form.addRow("Budget", budget_row)
        # Several GPUs: one process per GPU through torchrun (app/trainer/distributed.py); the job's batch of 4 is
        # split evenly, so 2 or 4 of them. Filled by refresh() from what PyTorch sees.
        self.devices_combo = QComboBox()
        self.devices_combo.addItem("One device", 1)
        self.devices_combo.setToolTip("One device: a GPU if PyTorch sees one, else the CPU. With several NVIDIA "
                                       "GPUs, train on 2 or 4 of them at once (torchrun)")
        form.addRow("Devices", self.devices_combo)
        setup = QGroupBox("What to train")
        setup.setLayout(form)

        self.hw_label = QLabel()
        self.hw_label.setWordWrap(True)
        self.estimate_label = QLabel(self._estimate_html())
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextFormat(Qt.TextFormat.RichText)
        hw = QGroupBox("Hardware check")
        hl = QVBoxLayout(hw)
        hl.addWidget(self.hw_label)
        hl.addWidget(self.estimate_label)

        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Run the last job's command again: it continues from its last checkpoint")
        self.resume_button.clicked.connect(self.resume)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Select the new model for watching (from the next Start; no restart)")
        self.use_button.clicked.connect(self._use)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.resume_button, self.use_button):
            buttons.addWidget(b)

        self.status = QLabel("No training job yet.")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.curves = Curves()
        self.pauc_label = QLabel()
        self.pauc_label.setObjectName("sourceName")
        # each mark's verdict: the new model played the marked sessions through the engine (app/trainer/feedback_check.py)
        self.verdicts_label = QLabel()
        self.verdicts_label.setWordWrap(True)
        self.verdicts_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        left = QVBoxLayout()
        left.addWidget(setup)
        left.addWidget(hw)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addLayout(buttons)
        right.addWidget(self.status)
        right.addWidget(self.progress)
        right.addWidget(self.curves, 1)
        right.addWidget(self.pauc_label)
        right.addWidget(self.verdicts_label)
        outer = QHBoxLayout(self)
        lw = QWidget()
        lw.setLayout(left)
        lw.setMaximumWidth(520)
        outer.addWidget(lw)
        outer.addLayout(right, 1)
        self._update_buttons()

    @staticmethod
    def _estimate_html() -> str:
        rows = "".join(
            f"<tr><td>{e.vram_gib:.0f} GB</td><td>{'yes' if e.fits else 'no'}</td>"
            f"<td>{e.window_turns if e.fits else '—'}</td><td>{f'{e.peak_gib:.1f} GiB' if e.fits else '—'}</td>"
            f"<td>{f'{e.seconds_per_epoch / 60:.0f} min' if e.fits else '—'}</td><td>{e.tflops_assumed:.0f}</td></tr>"
            for e in estimate.estimate_table(1.0))
        return ("<b>LoRA on the 3B base, one hour of sessions</b> (estimates, see docs/training-estimates.md)"
                "<table cellspacing=6><tr><th>GPU</th><th>fits</th><th>window (turns)</th><th>peak</th>"
                f"<th>per epoch</th><th>TFLOP/s assumed</th></tr>{rows}</table>"
                "<small>The demo base trains on the CPU in minutes.</small>")

    # ---- state ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Count the marked sessions, list trained bases, re-run the hardware check."""
        n = len(sessions_with_feedback(self.sessions))
        self.data_combo.setItemText(0, f"{DATA_CHOICES['sessions']} ({n})")
        from app.trainer.feedback_job import data_root

        root = data_root() / "train"
        known = {self.base_combo.itemText(i) for i in range(self.base_combo.count())}
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / "sft" / "final" / "config.json").is_file() and d.name not in known:
                    self.base_combo.addItem(d.name)
        from app.trainer.distributed import available_devices

        cuda = sum(d["kind"] == "cuda" for d in available_devices())
        for n in (2, 4):
            if n <= cuda and self.devices_combo.findData(n) < 0:
                self.devices_combo.addItem(f"{n} GPUs (one process each, torchrun)", n)
        self.hardware_check()

    def hardware_check(self) -> bool:
        from app.trainer.feedback_job import data_root

        base = self.base_combo.currentText().strip()
        large = base != "demo" and (Path(base).expanduser() / "config.json").is_file() and sum(
            f.stat().st_size for f in Path(base).expanduser().glob("*.safetensors")) > 200 * 2**20
        hw = estimate.hardware(data_root())
        ok, msg = estimate.check(hw, large_base=large, disk_need_gib=estimate.DISK_NEED_GIB["large" if large else "demo"])
        self.hw_label.setText(msg)
        self.hw_label.setStyleSheet("" if ok else "color: #ffb4b4;")
        return ok

    def _preset_changed(self) -> None:
        steps = PRESETS[self.preset_combo.currentData()][1]
        self.steps_spin.setValue(steps)
        self.max_steps_spin.setValue(4 * steps)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Dataset folder")
        if d:
            self.folder_edit.setText(d)

    def command(self) -> list[str]:
        """The ``duet train feedback`` command line for the page's choices (raises ValueError if unusable)."""
        name = self.name_edit.text().strip()
        base = self.base_combo.currentText().strip()
        data = self.data_combo.currentData()
        preset = self.preset_combo.currentData()
        # a frozen build has no `python -m`: its own executable takes the `train` command
        head = [sys.executable, "train"] if getattr(sys, "frozen", False) else [self.python, "-m", "app.trainer.cli"]
        argv = [*head, "feedback", "--quiet", "--base", base, "--name", name,
                "--steps", str(self.steps_spin.value())]
        if data == "sessions":
            if not sessions_with_feedback(self.sessions):
                raise ValueError("No session has feedback yet: mark replies in the chat (✎ types a correction) or "
                                 "the Sessions tab first; there is nothing to learn.")
            argv += ["--all", "--max-steps", str(max(self.max_steps_spin.value(), self.steps_spin.value())),
                     "--max-minutes", str(self.max_minutes_spin.value())]
        elif data == "folder":
            folder = Path(self.folder_edit.text().strip()).expanduser()
            files = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.json")) if folder.is_dir() else []
            if not files:
                raise ValueError(f"{folder}: no dataset file (.jsonl in Duet format or .json in ProactiveVideoQA "
                                 "format) in that folder")
            for f in files:
                argv += ["--replay", str(f)]
        else:
            argv += ["--synthetic"]
        if preset == "quick" and data != "sessions":
            raise ValueError("The quick preset trains on your feedback: choose “My sessions with feedback”, "
                             "or the SFT preset for a dataset.")
        grpo = PRESETS[preset][2]
        if grpo:
            if data == "sessions":
                raise ValueError("GRPO needs clips with gold answers: choose a dataset folder or synthetic videos.")
            argv += ["--grpo-steps", str(grpo)]
        from app.trainer.jobs import gpus_args

        return argv + gpus_args(int(self.devices_combo.currentData() or 1))

    # ---- actions --------------------------------------------------------------------------------
    @Slot()
    def start(self) -> bool:
        from app.trainer.feedback_job import NAME_RE, job_dir

        name = self.name_edit.text().strip()
        if not NAME_RE.match(name) or name in ("demo", "tiny"):
            return self._problem("Name the new model with letters, digits, '.', '_' or '-' (not demo or tiny).")
        try:
            argv = self.command()
        except ValueError as e:
            return self._problem(str(e))
        if name == self.base_combo.currentText().strip():
            return self._problem("Give the new model another name than the model it starts from.")
        if not self.hardware_check():
            return self._problem(f"Not started: {self.hw_label.text()}")
        folder = job_dir(name)
        if JobProcess(folder).running():
            return self._problem(f"“{name}” is already training.")
        if folder.exists():  # Start means a fresh run: an earlier job of this name is replaced (Resume continues)
            import shutil

            shutil.rmtree(folder)
        return self._launch(argv, folder, fresh=True)

    def _launch(self, argv: list[str], folder: Path, *, fresh: bool) -> bool:
        try:
            job = JobProcess.start(argv, folder, env=dict(os.environ))
        except Exception as e:  # noqa: BLE001 - a busy folder or an unstartable Python: say so, keep the page usable
            return self._problem(f"Could not start the job: {e}")
        self._attach(job, fresh=fresh)
        return True

    @Slot()
    def cancel(self) -> None:
        if self.job is not None and self.job.running():
            self.job.cancel()
            self.status.setText("Cancelling: the job saves a checkpoint, then stops…")

    @Slot()
    def resume(self) -> bool:
        if self.job is None or self.job.running():
            return False
        argv = self.job.info().get("argv")
        if not argv:
            return self._problem("This job's command is not recorded; start it again instead.")
        return self._launch(list(argv), self.job.folder, fresh=False)

    def _use(self) -> None:
        name = self.trained_name()
        if name:
            self.use_model.emit(name)
            self.status.setText(f"“{name}” is selected for watching; press Start on the Watch tab.")

    def _problem(self, text: str) -> bool:
        self.status.setText(text)
        self.status.setStyleSheet("color: #ffb4b4;")
        return False

    def reattach(self) -> None:
        """Find the newest job in the training folder (running or finished) and show it."""
        from app.trainer.feedback_job import data_root

        root = data_root() / "train"
        # job.json is written by the page's launcher and by `duet train feedback` itself (terminal runs too)
        jobs = sorted(root.glob("*/job.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if jobs:
            self._attach(JobProcess(jobs[-1].parent), fresh=False)

    def _attach(self, job: JobProcess, *, fresh: bool) -> None:
        old, self.job = self.job, job
        self.status.setStyleSheet("")
        if not fresh and old is not None and old.folder == job.folder:
            job.continue_after(old)  # a resumed job: keep the curves, read on from where we were
        else:  # another job (or reattaching): read its whole history, earlier runs included
            self.events = []
            self.curves.clear()
            self.pauc = {"before": None, "after": None}
            self.verdicts_label.clear()
        self.watcher.watch("training", job)  # looks now, then while it runs, and once after it ends

    def trained_name(self) -> str | None:
        for e in reversed(self.events):
            if e.get("event") == "done" and e.get("stage") == "feedback":
                return str(e.get("name"))
        return None

    @Slot()
    def poll(self) -> None:
        """Read the job's new events and show where it is (the watcher's tick)."""
        if self.job is None:
            return
        for e in self.job.read_events():
            self.events.append(e)
            self._on_event(e)
        self._show_state(self.job.running())

    def _on_event(self, e: dict) -> None:
        ev, stage = e.get("event"), e.get("stage")
        if ev == "step" and stage == "sft" and "loss" in e:
            self.curves.add("loss", int(e["step"]), float(e["loss"]))
            self.progress.setRange(0, int(e.get("steps", 0)) or 1)
            self.progress.setValue(int(e["step"]))
            self.progress.setFormat(f"SFT step %v of %m · about {e.get('eta_s', 0):.0f} s left")
        elif ev == "step" and stage == "grpo":
            r = e.get("reward_mean", e.get("reward"))
            if isinstance(r, (int, float)):
                self.curves.add("reward", int(e["step"]), float(r))
            self.progress.setRange(0, int(e.get("steps", 0)) or 1)
            self.progress.setValue(int(e["step"]))
            self.progress.setFormat("GRPO step %v of %m")
        elif ev == "eval" and stage == "sft":
            key = "before" if int(e.get("step", 0)) == 0 else "after"
            self.pauc[key] = e.get("pauc")
        elif stage == "feedback" and ev in ("precheck", "verdicts", "done") and e.get("verdicts") is not None:
            self._show_verdicts(e)
        elif ev == "resume":
            self.status.setText(f"Resumed {stage} from step {e.get('step')}")

    def _show_verdicts(self, e: dict) -> None:
        """Each mark's verdict, as `duet train feedback` prints it (app/trainer/feedback_report.py)."""
        from app.trainer.feedback_report import forgetting_line, verdict_lines

        head = {"precheck": "The base model on your marks:", "verdicts": f"After step {e.get('step')}:",
                "done": "The new model on your marks:"}[e["event"]]
        lines = [head, *verdict_lines(e["verdicts"])]
        if e["event"] == "done":
            lines.append(forgetting_line(e.get("forgetting")))
        self.verdicts_label.setText("\n".join(lines))

    def _show_state(self, running: bool) -> None:
        outcome = None if running else (self.job.outcome(self.events) if self.job else None)
        last_err = next((e for e in reversed(self.events) if e.get("event") == "error"), None)
        name = self.job.folder.name if self.job else ""
        if running:
            stage = next((e.get("stage") for e in reversed(self.events) if e.get("stage")), "starting")
            self.status.setText(f"Training “{name}”: {stage}… (it keeps running if you close the window)")
            self.status.setStyleSheet("")
        elif outcome == "done":
            done = next((e for e in reversed(self.events) if e.get("event") == "done" and e.get("stage") == "feedback"),
                        {})
            learned = {True: " It says every correction.", False: " Not every correction was learned within the "
                       "budget (below): raise it and Start again, or use the model as it is."}.get(done.get("learned"), "")
            self.status.setText(f"Done: “{self.trained_name()}” is in the model library.{learned}")
            self.status.setStyleSheet("")
            self.progress.setFormat("finished: %v of %m steps")
        elif outcome == "cancelled":
            self.status.setText(f"“{name}” was cancelled; Resume continues from its last checkpoint.")
        elif outcome == "error" and last_err is not None and last_err.get("kind") == "nothing-to-learn":
            self._problem(f"Nothing trained: {last_err.get('message')}. To teach it: {last_err.get('advice', '')}")
        elif outcome == "error" and last_err is not None:
            self._problem(f"Failed: {last_err.get('message')} — {last_err.get('advice', '')}")
        b, a = self.pauc["before"], self.pauc["after"]
        if b is not None:
            after = f"{a:.3f}" if a is not None else "…"
            self.pauc_label.setText(f"Held-out PAUC   before {b:.3f}   →   after {after}")
        else:
            self.pauc_label.setText("Held-out PAUC: measured before and after on clips the training never saw "
                                    "(for the demo base)")
        self._update_buttons(running, outcome)

    def _update_buttons(self, running: bool = False, outcome: str | None = None) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.resume_button.setEnabled(not running and outcome in ("cancelled", "error"))
        self.use_button.setEnabled(not running and outcome == "done")
