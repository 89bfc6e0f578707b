"""The Models page: what is installed, the built-in models, and importing a GGUF + mmproj pair.

Importing validates the pair's metadata first (``check_pair``: llama.cpp would abort the process
on some mismatches) and copies the files in a background thread — GGUF files are gigabytes.
Downloading from Hugging Face has its own issue; the page keeps a place for it.
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
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.modelhub.library import ModelLibrary
from app.modelhub.validate import ModelFileError, check_pair
from app.ui.background import BackgroundOp, describe_error


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 2**20:,.0f} MB"
    except OSError:
        return "missing"


class ModelPage(QWidget):
    """Lists models; ``changed`` fires after an import so the main window refreshes its picker."""

    changed = Signal()

    def __init__(self, library: ModelLibrary) -> None:
        super().__init__()
        self.library = library
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 16, 16, 16)
        title = QLabel("INSTALLED MODELS")
        title.setObjectName("sectionTitle")
        lay.addWidget(title)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Name", "Kind", "Size", "Files"])
        header = self.table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        lay.addWidget(self.table, 1)

        box = QGroupBox("Import a GGUF model + its mmproj")
        form = QVBoxLayout(box)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Name in the library, e.g. mmduet2-q4")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Text model (.gguf)")
        self.mmproj_edit = QLineEdit()
        self.mmproj_edit.setPlaceholderText("Vision projector (mmproj-*.gguf)")
        for edit, caption in ((self.model_edit, "Model…"), (self.mmproj_edit, "mmproj…")):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            b = QPushButton(caption)
            b.clicked.connect(lambda _=False, e=edit: self._browse(e))
            row.addWidget(b)
            form.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.name_edit, 1)
        self.import_button = QPushButton("Validate and import")
        self.import_button.setObjectName("primary")
        self.import_button.clicked.connect(self.start_import)
        row.addWidget(self.import_button)
        form.addLayout(row)
        self.message = QLabel()
        self.message.setWordWrap(True)
        form.addWidget(self.message)
        lay.addWidget(box)

        hub = QGroupBox("Download from Hugging Face")
        hub_lay = QVBoxLayout(hub)
        hub_note = QLabel("Coming soon: browse MMDuet2 GGUF builds and download them here. Until then, "
                          "download a GGUF + mmproj pair yourself and import it above.")
        hub_note.setWordWrap(True)
        hub_lay.addWidget(hub_note)
        hub.setEnabled(False)
        self.hub_box = hub
        lay.addWidget(hub)
        self.refresh()

    def refresh(self) -> None:
        rows: list[tuple[str, str, str, str]] = [
            ("tiny", "built-in test model (random weights: replies are gibberish)", "—", "built on first use"),
        ]
        demo = self.library.get("demo")
        rows.append(("demo", "offline demo model",
                     _size(demo.model) if demo else "—",
                     str(demo.model) if demo else "not built yet: run `duet train demo`"))
        for e in self.library.entries():
            if e.name == "demo":
                continue
            rows.append((e.name, e.source, _size(e.model), f"{e.model}\n{e.mmproj}"))
        self.table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(r, c, item)
        self.table.resizeRowsToContents()

    def model_names(self) -> list[str]:
        names = ["tiny"]
        if self.library.get("demo"):
            names.append("demo")
        names += [e.name for e in self.library.entries() if e.name not in ("demo", "tiny")]
        return names

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
                     failure=lambda e: self._import_failed(describe_error(e)), name="duet-import").run()

    def _imported(self, name: str) -> None:
        self.import_button.setEnabled(True)
        self.message.setText(f"✓ Imported “{name}”. Choose it in the Watch tab.")
        self.refresh()
        self.changed.emit()

    def _import_failed(self, msg: str) -> None:
        self.import_button.setEnabled(True)
        self.message.setText(f"✗ {msg}")
