"""The Sessions page: every saved session, its transcript with thumbnails, feedback, export.

Feedback given here is appended to the session's own log (never a rewrite), exactly like feedback
given live, so the trainer reads one format. A mark or an export that cannot be written (a full
disk) says so in the page's banner; the log and any earlier export file are left as they were.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.atomic import write_text_atomic
from app.core.errors import describe_write_failure
from app.core.session_export import export_json, export_markdown
from app.core.session_read import SavedSession, load_session
from app.core.sessions import CUT_SHORT, SessionStore, add_feedback, is_running
from app.ui.chat_view import THUMB_W, ChatView


class SessionsPage(QWidget):
    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store
        self.current: SavedSession | None = None
        self.list = QListWidget()
        self.list.currentItemChanged.connect(self._open_item)
        self.header = QLabel("Pick a session")
        self.header.setObjectName("sourceName")
        self.chat = ChatView()
        self.chat.feedback.connect(self._feedback)
        self.md_button = QPushButton("Export Markdown…")
        self.json_button = QPushButton("Export JSON…")
        self.md_button.clicked.connect(lambda: self._export("md"))
        self.json_button.clicked.connect(lambda: self._export("json"))
        self.banner = QLabel()  # a mark or an export that could not be written
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        self.last_error = ""
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        left = QWidget()
        ll = QVBoxLayout(left)
        title = QLabel("SAVED SESSIONS")
        title.setObjectName("sectionTitle")
        ll.addWidget(title)
        ll.addWidget(self.list, 1)
        ll.addWidget(refresh)
        right = QWidget()
        rl = QVBoxLayout(right)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.md_button)
        top.addWidget(self.json_button)
        rl.addLayout(top)
        rl.addWidget(self.banner)
        rl.addWidget(self.chat, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([300, 900])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 16, 16, 16)
        lay.addWidget(split)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the list; the open session stays open (and is re-read), or the pane is cleared."""
        keep = self.current.directory if self.current is not None else None
        self.list.blockSignals(True)
        self.list.clear()
        row = -1
        for path in self.store.list():
            s = load_session(path)
            item = QListWidgetItem(f"{s.title}\n{self.status_line(s)}" + (f"  · {s.problem}" if s.problem else ""))
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.list.addItem(item)
            if keep is not None and path == keep:
                row = self.list.count() - 1
        self.list.blockSignals(False)
        if row >= 0:
            self.list.setCurrentRow(row)
            self.open(keep)  # type: ignore[arg-type]
        else:
            self.clear_detail()

    @staticmethod
    def status_line(s: SavedSession) -> str:
        """One line under the title: counts and how the session ended (or that it is still running)."""
        if is_running(s.directory):
            state = "● running now"
        elif s.ended is None:
            state = "interrupted (the app stopped)"
        elif s.ended == "error":
            state = "ended with an error"
        elif s.ended == CUT_SHORT:
            state = "the transcript stops early (a write failed)"
        else:
            state = ""
        if not s.steps and not s.questions:
            counts = "no turns yet" if is_running(s.directory) else "no turns recorded (it did not start)"
        else:
            counts = f"{len(s.replies)} replies, {len(s.steps)} turns"
        return f"{counts} · {state}" if state else counts

    def clear_detail(self) -> None:
        """Nothing selected: an empty pane that says so (never a stale session with dead buttons)."""
        self.current = None
        self.list.setCurrentRow(-1)
        self.header.setText("Pick a session on the left")
        self.chat.clear()
        self.md_button.setEnabled(False)
        self.json_button.setEnabled(False)

    def _open_item(self, item: QListWidgetItem | None, _prev: object = None) -> None:
        if item is not None:
            self.open(Path(item.data(Qt.ItemDataRole.UserRole)))
        else:
            self.clear_detail()

    def open(self, path: Path) -> None:
        s = self.current = load_session(path)
        self.header.setText(s.title)
        self.chat.clear()
        for step in s.steps:
            if step.get("question"):
                self.chat.add_question(step["question"], float(step.get("time", 0)))
            if step.get("silent"):
                continue
            thumb = None
            if step.get("thumb"):
                pix = QPixmap(str(path / step["thumb"]))
                thumb = None if pix.isNull() else pix.scaledToWidth(THUMB_W, Qt.TransformationMode.SmoothTransformation)
            self.chat.add_reply(step.get("text", ""), float(step.get("time", 0)), int(step["turn"]), thumb=thumb,
                                feedback_on=s.feedback.get(int(step["turn"]), set()))
        if is_running(s.directory):
            self.chat.add_notice("This session is running now; press Refresh to see its newest turns.")
        elif not s.ended:
            self.chat.add_notice("This session ended without being closed (the app stopped); "
                                 "everything up to that moment is here.")
        self.md_button.setEnabled(True)
        self.json_button.setEnabled(True)

    def show_problem(self, text: str) -> None:
        self.last_error = text
        self.banner.setText(text)
        self.banner.show()

    def _feedback(self, turn: int, kind: str, on: bool) -> None:
        if self.current is None:
            return
        try:
            add_feedback(self.current.directory, turn, kind, on)
        except OSError as e:
            self.show_problem(describe_write_failure(
                e, "Your mark could not be saved",
                "the session's log is as it was; mark the reply again once there is room"))
            for bubble in self.chat.replies():  # the button shows what is saved, not what was tried
                button = bubble.buttons.get(kind) if bubble.turn == turn else None
                if button is not None:
                    button.blockSignals(True)
                    button.setChecked(not on)
                    button.blockSignals(False)
            return
        self.banner.hide()

    def export_to(self, path: Path, fmt: str) -> Path:
        """Write the open session; Markdown links thumbnails relative to where the file is written.

        Relative links keep working when the export and the session folder move together (a
        synced folder, a zip); only across drives (Windows), where no relative path exists, is the
        link absolute. The file is written atomically: a failure leaves an earlier file there whole.
        """
        assert self.current is not None
        if fmt == "md":
            text = export_markdown(load_session(self.current.directory))
            thumbs = self.current.directory / "thumbs"
            try:
                rel = Path(os.path.relpath(thumbs, path.parent.resolve())).as_posix()
            except ValueError:  # another drive
                rel = thumbs.as_posix()
            text = text.replace("](thumbs/", f"]({quote(rel)}/")
        else:
            text = export_json(load_session(self.current.directory))
        write_text_atomic(path, text)
        return path

    def _export(self, fmt: str) -> None:
        if self.current is None:
            return
        suffix = ".md" if fmt == "md" else ".json"
        default = str(Path.home() / f"duet-{self.current.id}{suffix}")
        path, _ = QFileDialog.getSaveFileName(self, "Export session", default)
        if path:
            self.save_export(Path(path), fmt)

    def save_export(self, path: Path, fmt: str) -> bool:
        """Export to ``path``; a failure (a full disk, a folder not writable) is shown in the banner."""
        try:
            self.export_to(path, fmt)
        except OSError as e:
            self.show_problem(describe_write_failure(
                e, "The export could not be written", "nothing half-written was left, and a file that was "
                "there before is kept; export again once there is room"))
            return False
        self.banner.hide()
        return True
