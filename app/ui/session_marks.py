"""The Sessions page's feedback beyond the reply buttons: every mark in force, and "missed at a time".

``duet sessions feedback`` can mark a reply wrong *with a correction*, and mark a moment where the model
said nothing but should have (``missed``, with what it should have said). The page offers both, and lists
every mark the session holds, whoever wrote it (the Watch chat, this page, the CLI), so a mark added in a
terminal is visible here. Marks go through :func:`app.core.sessions.add_mark`, the CLI's path.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core import feedback as fbk
from app.core.session_read import SavedSession
from app.core.timefmt import clock
from app.ui.chat_view import TEXT_MIN_WIDTH


def mark_line(mark: fbk.Feedback) -> str:
    """One mark as the list shows it: its time and what it says (``00:08 · wrong: “A red star.”``)."""
    return f"{clock(mark.time)} · {mark.describe()}"


class MissedDialog(QDialog):
    """Asks for the moment (seconds of video) and what Duet should have said there."""

    def __init__(self, at: float, length: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Duet missed something")
        form = QFormLayout(self)
        self.time = QDoubleSpinBox()
        self.time.setRange(0.0, max(length, at, 0.0) + 60.0)  # a moment just after the last step is fair
        self.time.setDecimals(1)
        self.time.setSingleStep(0.5)
        self.time.setSuffix(" s")
        self.time.setValue(at)
        self.time.valueChanged.connect(self._show_clock)
        self.clock = QLabel()
        self._show_clock(at)
        form.addRow("At", self.time)
        form.addRow("", self.clock)
        self.text = QLineEdit()
        self.text.setPlaceholderText("What Duet should have said at that moment")
        self.text.setMinimumWidth(TEXT_MIN_WIDTH)  # a sentence stays readable as it is typed (issue 26 pass)
        form.addRow("Should have said", self.text)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.text.textChanged.connect(self._check)
        self._check("")

    def _show_clock(self, value: float) -> None:
        self.clock.setText(f"video time {clock(value)}")

    def _check(self, text: str) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(bool(text.strip()))  # the schema needs the text (fbk.validate): say so before, not after
        ok.setToolTip("" if text.strip() else "Type what Duet should have said; that is what it learns")

    def mark(self) -> fbk.Feedback:
        return fbk.Feedback("missed", round(self.time.value(), 3), None, self.text.text().strip())


class MarksPanel(QWidget):
    """The session's marks in force, and the "Missed something…" button; the page writes what it asks for."""

    missed = Signal(object)  # a fbk.Feedback of kind "missed" to write

    def __init__(self) -> None:
        super().__init__()
        self.title = QLabel("MARKS AND CORRECTIONS")
        self.title.setObjectName("sectionTitle")
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.setToolTip("Every mark this session holds: from the Watch chat, this page, or "
                             "`duet sessions feedback`. `duet train feedback` learns from them.")
        self.missed_button = QPushButton("Missed something…")
        self.missed_button.setToolTip("Duet said nothing where it should have: give the moment and what it "
                                      "should have said (as `duet sessions feedback --kind missed`)")
        self.missed_button.clicked.connect(self.ask_missed)
        self.dialog: MissedDialog | None = None
        self._session: SavedSession | None = None
        self.at = 0.0  # the moment the dialog proposes (the selected reply's, when the page knows one)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(self.list)
        lay.addWidget(self.missed_button)

    def show_session(self, s: SavedSession | None) -> None:
        self._session = s
        self.list.clear()
        self.missed_button.setEnabled(s is not None)
        marks = sorted(s.marks, key=lambda m: (m.time, m.kind)) if s is not None else []
        for m in marks:
            self.list.addItem(mark_line(m))
        if s is not None and not marks:
            self.list.addItem("No marks yet: mark a reply below, or say what Duet missed.")
        self.title.setText(f"MARKS AND CORRECTIONS ({len(marks)})" if marks else "MARKS AND CORRECTIONS")

    def lines(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def ask_missed(self) -> MissedDialog | None:
        """Open the dialog (not blocking); on OK the mark is handed to the page through :attr:`missed`."""
        s = self._session
        if s is None:
            return None
        steps = [float(st.get("time", 0.0)) for st in s.steps]
        d = self.dialog = MissedDialog(self.at, max(steps, default=0.0), self)
        d.accepted.connect(lambda: self.missed.emit(d.mark()))
        d.open()
        return d
