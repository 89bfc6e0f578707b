"""The Models page: this machine, installed models, models to download, and importing a GGUF pair.

The downloads are their own box (:class:`app.ui.download_rows.DownloadList`: the pulls are child
processes of the app, not of this page). Importing validates the pair's metadata first (``check_pair``:
llama.cpp would abort the process on some mismatches) and copies the files in a background thread.

Layout: the page scrolls rather than squeezing; the installed-models table keeps room for several
compact one-line rows (full paths in the tooltip), and its buttons sit in its header row, above
anything that grows or shrinks (a download row, a message).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import describe
from app.core.sizes import human_bytes
from app.modelhub import hardware
from app.modelhub.jobs import PullManager, manager
from app.modelhub.library import ModelLibrary
from app.modelhub.validate import ModelFileError, check_pair
from app.ui.background import BackgroundOp
from app.ui.download_rows import DownloadList


def _size(path: Path) -> str:
    try:
        return human_bytes(path.stat().st_size)
    except OSError:
        return "missing"


TABLE_ROWS = 5  # installed models the table shows without scrolling


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

        self.downloads = DownloadList(library, self.jobs, self.hw, self.rec)
        self.downloads.installed.connect(self._installed)
        self.downloads.problem.connect(self.library_message.setText)
        self.hub_box = self.downloads
        self.pull_rows = self.downloads.pull_rows  # repository → its row's widgets
        lay.addWidget(self.downloads)

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

        self.refresh()

    def _installed(self) -> None:
        """A download finished: the new model is in the table, and the window offers it."""
        self.refresh()
        self.changed.emit()

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
