"""The Sessions page: every saved session, its transcript with thumbnails, feedback, export.

Feedback given here is appended to the session's own log (never a rewrite), exactly like feedback
given live, so the trainer reads one format. It is the feedback ``duet sessions feedback`` gives: the
reply marks, "wrong" with a correction (✎ correct…, a dialog that names the reply's time), and "missed"
at a moment (:mod:`app.ui.session_marks`, which also lists every mark in force, the CLI's included).
Re-reading the open session (Refresh, a session that ends) keeps the list's and the transcript's
scroll positions, and waits while a correction dialog is open. A mark or an export that cannot be written (a full
disk) says so in the page's banner; the log and any earlier export file are left as they were. An
export that was written says where, with a button that opens its folder.

The list names a source the way the Watch tab does ("Video file · clip.mp4", whether it was saved
as ``file:/…/clip.mp4`` or as the bare path); a line too long for the column is elided, and its
tooltip holds it whole.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
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

from app.capture.parse import canonical_spec
from app.core.atomic import write_text_atomic
from app.core.errors import describe_write_failure
from app.core.feedback import FeedbackError
from app.core.session_export import export_json, export_markdown
from app.core.session_read import SavedSession, load_session
from app.core.sessions import CUT_SHORT, SessionStore, add_feedback, add_mark, is_running
from app.ui.chat_view import THUMB_W, ChatView
from app.ui.session_marks import MarksPanel
from app.ui.source_picker import describe

LIST_MIN_WIDTH = 300  # the saved-sessions column: wide enough for "2026-01-01 12:00 · Video file · name"


class ElidedLabel(QLabel):
    """One line that is drawn elided in the middle when it does not fit, whole in its tooltip.

    Why: a session's title holds the video's full path, and a plain QLabel asks for its whole width,
    so one long path widened the window past the screen instead of shortening the title.
    """

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), 120), hint.height())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        rect = self.contentsRect()
        shown = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideMiddle, rect.width())
        painter = QPainter(self)
        self.style().drawItemText(painter, rect, int(self.alignment() | Qt.AlignmentFlag.AlignVCenter),
                                  self.palette(), self.isEnabled(), shown, self.foregroundRole())
        painter.end()


class SessionsPage(QWidget):
    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store
        self.current: SavedSession | None = None
        self.last_export: Path | None = None
        self.list = QListWidget()
        self.list.setMinimumWidth(LIST_MIN_WIDTH)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long name keeps its start and its end
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setUniformItemSizes(True)
        self.list.currentItemChanged.connect(self._open_item)
        self.header = ElidedLabel("Pick a session")
        self.header.setObjectName("sourceName")
        self.chat = ChatView(corrections=True)
        self.chat.feedback.connect(self._feedback)
        self.chat.correction.connect(lambda turn, text: self._feedback(turn, "wrong", True, text))
        self.chat.editing.connect(lambda on: on or not self._refresh_waiting or self.refresh())
        self._refresh_waiting = False  # a refresh asked for while a correction dialog was open
        self.marks = MarksPanel()
        self.marks.missed.connect(self._missed)
        self.md_button = QPushButton("Export Markdown…")
        self.json_button = QPushButton("Export JSON…")
        self.md_button.clicked.connect(lambda: self._export("md"))
        self.json_button.clicked.connect(lambda: self._export("json"))
        self.banner = QLabel()  # a mark or an export that could not be written
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()
        self.last_error = ""
        self.export_note = QLabel()  # where the last export was written
        self.export_note.setWordWrap(True)
        self.export_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setToolTip("Show the exported file's folder in the file manager")
        self.open_folder_button.clicked.connect(self.open_export_folder)
        self.export_row = QWidget()
        er = QHBoxLayout(self.export_row)
        er.setContentsMargins(0, 0, 0, 0)
        er.addWidget(self.export_note, 1)
        er.addWidget(self.open_folder_button)
        self.export_row.hide()
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
        rl.addWidget(self.export_row)
        rl.addWidget(self.chat, 1)
        rl.addWidget(self.marks)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setChildrenCollapsible(False)
        split.setStretchFactor(0, 0)  # a wider window widens the transcript; the list keeps its width
        split.setStretchFactor(1, 1)
        split.setSizes([380, 820])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 16, 16, 16)
        lay.addWidget(split)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the list; the open session stays open (and is re-read), or the pane is cleared.

        Nothing moves under the user: the list keeps its scroll position, the transcript its own, and while
        a correction dialog is open the re-read waits for it to close."""
        if self.chat.editing_now:
            self._refresh_waiting = True
            return
        self._refresh_waiting = False
        keep = self.current.directory if self.current is not None else None
        list_at = self.list.verticalScrollBar().value()
        self.list.blockSignals(True)
        self.list.clear()
        row = -1
        for path in self.store.list():
            s = load_session(path)
            status = self.status_line(s) + (f"  · {s.problem}" if s.problem else "")
            item = QListWidgetItem(f"{self.list_title(s)}\n{status}")
            item.setToolTip(f"{self.title(s)}\n{status}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.list.addItem(item)
            if keep is not None and path == keep:
                row = self.list.count() - 1
        self.list.blockSignals(False)
        if row >= 0:
            self.list.blockSignals(True)  # selecting it again must not scroll the list to it
            self.list.setCurrentRow(row)
            self.list.blockSignals(False)
            self.open(keep)  # type: ignore[arg-type]
        else:
            self.clear_detail()
        self.list.verticalScrollBar().setValue(list_at)

    @staticmethod
    def _started(s: SavedSession) -> str:
        started = s.meta.get("started", 0)
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(started if isinstance(started, (int, float)) else 0))

    @classmethod
    def title(cls, s: SavedSession) -> str:
        """When, and what was watched in its one written form (a video as its path, never ``file:``+path)."""
        source = s.meta.get("source", "?")
        return f"{cls._started(s)} · {canonical_spec(source) if isinstance(source, str) else '?'}"

    @classmethod
    def list_title(cls, s: SavedSession) -> str:
        """The list's short line: when, and the source named as the Watch tab names it."""
        source = s.meta.get("source", "?")
        return f"{cls._started(s)} · {describe(source) if isinstance(source, str) else '?'}"

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
        self.marks.show_session(None)

    def _open_item(self, item: QListWidgetItem | None, _prev: object = None) -> None:
        if item is not None:
            self.open(Path(item.data(Qt.ItemDataRole.UserRole)))
        else:
            self.clear_detail()

    def open(self, path: Path) -> None:
        again = self.current is not None and self.current.directory == Path(path)
        chat_at = self.chat.verticalScrollBar().value()
        s = self.current = load_session(path)
        self.header.setText(self.title(s))
        self.export_row.hide()  # it spoke of another session's export
        self.chat.clear()
        if again:
            self.chat.keep_position(chat_at)
        asked = [q for q in s.questions if isinstance(q.get("time"), (int, float))]  # when each was typed
        corrections = {m.turn: m.text for m in s.marks if m.kind == "wrong" and m.text}
        for step in s.steps:
            if step.get("question"):
                self._add_questions(step["question"], float(step.get("time", 0)), asked)
            if step.get("silent"):
                continue
            thumb = None
            if step.get("thumb"):
                pix = QPixmap(str(path / step["thumb"]))
                thumb = None if pix.isNull() else pix.scaledToWidth(THUMB_W, Qt.TransformationMode.SmoothTransformation)
            turn = int(step["turn"])
            bubble = self.chat.add_reply(step.get("text", ""), float(step.get("time", 0)), turn, thumb=thumb,
                                         feedback_on=s.feedback.get(turn, set()))
            if bubble is not None and turn in corrections:
                bubble.show_correction(corrections[turn])
        replies = s.replies
        self.marks.at = float(replies[-1].get("time", 0.0)) if replies else 0.0
        self.marks.show_session(s)
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

    def _add_questions(self, question: str, step_time: float, asked: list[dict]) -> None:
        """A step's question(s) stamped as the live chat stamped them: when typed, and the step that carried
        them. Sessions saved before questions kept their time show the step's time, as they did."""
        mine = [q for q in asked if str(q.get("text", "")).strip() and str(q["text"]).strip() in question]
        if not mine:
            self.chat.add_question(question, step_time)
            return
        for q in mine:
            asked.remove(q)
            self.chat.add_question(str(q["text"]), float(q["time"]), spoken=bool(q.get("spoken")), pending=True)
        self.chat.settle_questions(question, step_time)

    def _feedback(self, turn: int, kind: str, on: bool, text: str = "") -> None:
        if self.current is None:
            return
        try:
            add_feedback(self.current.directory, turn, kind, on, text)
        except FeedbackError as e:  # the schema refused it (a text it cannot keep): said, nothing written
            self.show_problem(f"This mark could not be kept: {e}.")
            return
        except OSError as e:
            self.show_problem(describe_write_failure(
                e, "Your mark could not be saved",
                "the session's log is as it was; mark the reply again once there is room"))
            for bubble in self.chat.replies():  # the button shows what is saved, not what was tried
                button = bubble.buttons.get(kind) if turn in bubble.turns else None
                if button is not None:
                    button.blockSignals(True)
                    button.setChecked(not on)
                    button.blockSignals(False)
            return
        self.banner.hide()
        self._show_marks()

    def _missed(self, mark: object) -> None:
        if self.current is None:
            return
        try:
            add_mark(self.current.directory, mark)  # type: ignore[arg-type]
        except FeedbackError as e:
            self.show_problem(f"This mark could not be kept: {e}.")
            return
        except OSError as e:
            self.show_problem(describe_write_failure(
                e, "Your mark could not be saved", "the session's log is as it was; add it again once there is room"))
            return
        self.banner.hide()
        self._show_marks()

    def _show_marks(self) -> None:
        """The marks list as the log now says (the transcript itself is not re-read: it holds still)."""
        if self.current is not None:
            self.marks.show_session(load_session(self.current.directory))

    def export_to(self, path: Path, fmt: str) -> Path:
        """Write the open session; Markdown links thumbnails relative to where the file is written.

        Relative links keep working when the export and the session folder move together (a
        synced folder, a zip); only across drives (Windows), where no relative path exists, is the
        link absolute. The file is written atomically: a failure leaves an earlier file there whole.
        """
        assert self.current is not None
        from app.core.bounded import check_output_file

        check_output_file(path, "the export path")  # a FIFO or a device there is refused, never replaced
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
        self.last_export = path
        self.export_note.setText(f"✓ Exported to {path}")
        self.export_row.show()
        return True

    def open_export_folder(self) -> bool:
        """Show the last export's folder in the desktop's file manager; False (said in the note) if none opens."""
        if self.last_export is None:
            return False
        folder = self.last_export.parent
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            return True
        self.export_note.setText(f"✓ Exported to {self.last_export} — no file manager could be opened here; "
                                 f"the folder is {folder}")
        return False
