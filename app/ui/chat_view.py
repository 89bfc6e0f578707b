"""The chat: the user's questions and the model's replies at their video time, with a thumbnail of the
frame each reply answered and per-reply feedback buttons (the schema of app/core/feedback.py) that
``duet train feedback`` turns into training data.

A plain scroll area of small bubble widgets rather than a model/view list: a session holds hundreds
of replies, not millions, and real widgets give real buttons for feedback without delegate tricks.

What a reply bubble shows is :func:`~app.ui.reply_text.shown_text` of it (no control characters,
special tokens or glued doubles), as plain text: a reply is never read as HTML. A reply identical to
the one just above it (case and punctuation aside) does not add a bubble: that bubble counts it
("×3") and takes its time, and a mark on it applies to every turn it stands for.
"""

from __future__ import annotations

import html
import re

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.feedback import KINDS, REPLY_KINDS
from app.core.text import normalise
from app.core.timefmt import clock
from app.ui.images import rgb_to_pixmap
from app.ui.reply_text import shown_text

THUMB_W = 112
FEEDBACK_ICONS = {"late": "◷", "redundant": "↺", "wrong": "✗", "good": "✓"}
# What each mark does to the training data (app/core/feedback.py, docs/feedback.md): said in the tooltip.
FEEDBACK_EFFECT = {
    "late": "trains this reply one turn earlier",
    "redundant": "trains silence (NO REPLY) here",
    "wrong": "trains silence here, or your correction if you give one with ✎",
    "good": "keeps this reply as a training target",
}
TRAIN_HOW = "saved with the session; `duet train feedback` fine-tunes a model on your marked sessions"
_LONG_RUN = 28


TEXT_MIN_WIDTH = 380  # px: a correction's field shows a short sentence whole, with or without a window manager


def soft_wrap(text: str) -> str:
    """Let very long "words" (URLs, an untrained model's babble) break: QLabel wraps only at spaces."""
    return re.sub(rf"\S{{{_LONG_RUN},}}",
                  lambda m: "\u200b".join(m.group(0)[i:i + _LONG_RUN] for i in range(0, len(m.group(0)), _LONG_RUN)),
                  text)


class Bubble(QFrame):
    """One message. Replies carry a turn number, a thumbnail and feedback toggles."""

    feedback = Signal(int, str, bool)  # turn, kind, on
    correction = Signal(int, str)  # turn, what it should have said (a "wrong" mark with its correction)
    editing = Signal(bool)  # its correction dialog opened (True) or closed

    def __init__(self, who: str, text: str, stamp: str, *, turn: int | None = None,
                 thumb: QPixmap | None = None, feedback_on: set[str] | None = None,
                 corrections: bool = False) -> None:
        super().__init__()
        self.who, self.text, self.turn = who, text, turn
        self.turns: list[int] = [turn] if turn is not None else []  # every turn this bubble stands for
        self.stamps: list[str] = [stamp]  # their times
        self.spoken = False
        self.asked_at: float | None = None  # a question's video time when it was asked
        self.correction_text = ""  # the user's correction of this reply, once given
        self.correction_label: QLabel | None = None
        self.correction_dialog: QInputDialog | None = None
        self.setObjectName({"duet": "replyBubble", "you": "questionBubble"}.get(who, "systemBubble"))
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 8, 10, 8)
        row.setSpacing(10)
        if thumb is not None:
            pic = QLabel()
            pic.setObjectName("thumb")
            pic.setPixmap(thumb)
            pic.setFixedWidth(THUMB_W)
            pic.setAlignment(Qt.AlignmentFlag.AlignTop)
            row.addWidget(pic)
        self._col = col = QVBoxLayout()
        col.setSpacing(3)
        self.name = {"duet": "Duet", "you": "You"}.get(who, "")
        self.head = head = QLabel()
        head.setObjectName("bubbleHead")
        self.set_stamp(stamp)
        col.addWidget(head)
        self.body = body = QLabel(soft_wrap(text))
        body.setObjectName("bubbleText")
        body.setTextFormat(Qt.TextFormat.PlainText)  # "<b>" or "</tool_call>" in a reply is text, never markup
        body.setWordWrap(True)
        body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        body.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        col.addWidget(body)
        self.buttons: dict[str, QToolButton] = {}
        if turn is not None and who == "duet":
            fb = QHBoxLayout()
            fb.setSpacing(4)
            fb.addStretch(1)
            for kind in REPLY_KINDS:
                label = KINDS[kind]
                b = QToolButton()
                b.setObjectName("feedbackButton")
                b.setCheckable(True)
                b.setChecked(kind in (feedback_on or set()))
                b.setText(f"{FEEDBACK_ICONS[kind]} {label}")
                b.setToolTip(f"Mark this reply as “{label}”: {FEEDBACK_EFFECT[kind]} ({TRAIN_HOW})")
                b.toggled.connect(lambda on, k=kind: self._mark(k, on))
                fb.addWidget(b)
                self.buttons[kind] = b
            if corrections:
                fix = QToolButton()
                fix.setObjectName("feedbackButton")
                fix.setText("✎ correct…")
                fix.setToolTip(f"Type what Duet should have said here: marks the reply “wrong” with your "
                               f"correction, which is trained at this moment ({TRAIN_HOW})")
                fix.clicked.connect(self.ask_correction)
                fb.addWidget(fix)
                self.buttons["correct"] = fix
            col.addLayout(fb)
        row.addLayout(col, 1)

    @property
    def count(self) -> int:
        """How many replies this bubble shows (identical ones in a row share one bubble)."""
        return max(1, len(self.turns))

    def set_stamp(self, stamp: str) -> None:
        self.stamp = stamp
        shown = html.escape(stamp) + (f"&nbsp;&nbsp;·&nbsp;&nbsp;×{self.count}" if self.count > 1 else "")
        grey = f"<span style='color:#8a93a6'>{shown}</span>"
        self.head.setText(f"<b>{self.name}</b>&nbsp;&nbsp;{grey}" if self.name else grey)
        self.head.setToolTip(f"Said {self.count} times, at {', '.join(self.stamps)}" if self.count > 1 else "")

    def add_repeat(self, turn: int, stamp: str, feedback_on: set[str] | None = None) -> None:
        """Count one more identical reply: the bubble takes its (latest) time and shows "×N"."""
        self.turns.append(turn)
        self.stamps.append(stamp)
        self.set_stamp(stamp)
        for kind in feedback_on or set():  # a saved mark on any of its turns shows on the bubble
            b = self.buttons.get(kind)
            if b is not None and not b.isChecked():
                b.blockSignals(True)
                b.setChecked(True)
                b.blockSignals(False)

    def _mark(self, kind: str, on: bool) -> None:
        """A mark on the bubble is a mark on every reply it stands for."""
        for turn in self.turns:
            self.feedback.emit(turn, kind, on)

    def ask_correction(self) -> QInputDialog:
        """Open the correction dialog, named by the reply's time so the user knows which moment is corrected.

        It does not block: replies that arrive meanwhile are added, but the chat holds still under it
        (:attr:`editing`), and a page that would re-read the session waits until it is closed."""
        d = QInputDialog(self)
        first = self.stamps[0]  # a folded bubble's correction goes to its first reply (apply_correction)
        d.setWindowTitle(f"Correct the reply at {first}")
        if self.count > 1:
            said = (f"Duet said “{self.text}” {self.count} times, from {first} to {self.stamps[-1]}. Your "
                    f"correction goes to the first, at {first}; the repeats are marked wrong.\n"
                    f"What should it have said at {first}?")
        else:
            said = f"At {first} Duet said: “{self.text}”\nWhat should it have said here?"
        d.setLabelText(soft_wrap(said))
        d.setTextValue(self.correction_text or self.text)
        d.setMinimumWidth(TEXT_MIN_WIDTH + 40)  # its line edit fills the width: a sentence stays readable
        d.textValueSelected.connect(self._corrected)
        d.finished.connect(lambda _r: self.editing.emit(False))
        self.correction_dialog = d
        self.editing.emit(True)
        d.open()
        return d

    def _corrected(self, text: str) -> None:
        if text.strip() and self.turn is not None:
            self.apply_correction(text.strip())

    def show_correction(self, text: str) -> None:
        """Show the user's correction under the reply (one saved earlier, from here or `duet sessions feedback`)."""
        self.correction_text = text
        if self.correction_label is None:
            self.correction_label = QLabel()
            self.correction_label.setObjectName("correction")
            self.correction_label.setWordWrap(True)
            self.correction_label.setTextFormat(Qt.TextFormat.PlainText)
            self._col.insertWidget(2, self.correction_label)  # under the reply's text, above its buttons
        self.correction_label.setText(soft_wrap(f"✎ Your correction: “{text}”"))
        b = self.buttons.get("wrong")
        if b is not None:
            b.setToolTip(f"Marked wrong; your correction: “{text}”")

    def apply_correction(self, text: str) -> None:
        """Record the correction (the "wrong" button shows it is marked).

        For a bubble standing for several identical replies, the correction belongs to the first
        (where it was first said) and the repeats are marked plain "wrong" (trained as silence).
        """
        if not self.turns:
            return
        b = self.buttons.get("wrong")
        if b is not None:  # lit first: a receiver that cannot save the mark turns it off again and says why
            b.blockSignals(True)  # the correction record already says "wrong"
            b.setChecked(True)
            b.blockSignals(False)
        self.show_correction(text)
        self.correction.emit(self.turns[0], text)
        for turn in self.turns[1:]:
            self.feedback.emit(turn, "wrong", True)


def _asked(bubble: Bubble) -> str:
    """"00:02 · asked" (or "asked aloud"); no time while it is not known."""
    how = "asked aloud" if bubble.spoken else "asked"
    return how if bubble.asked_at is None else f"{clock(bubble.asked_at)} · {how}"


class ChatView(QScrollArea):
    """Append-only list of bubbles that follows the newest one unless the user scrolled up."""

    feedback = Signal(int, str, bool)
    correction = Signal(int, str)
    editing = Signal(bool)  # a correction dialog is open (True) or none is any more

    def __init__(self, *, corrections: bool = False) -> None:
        """``corrections``: offer "✎ correct…" on replies (its owner connects :attr:`correction`)."""
        super().__init__()
        self.corrections = corrections
        self.setObjectName("chat")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        inner.setObjectName("chatInner")
        self._col = QVBoxLayout(inner)
        self._col.setContentsMargins(10, 10, 10, 10)
        self._col.setSpacing(8)
        self._col.addStretch(1)
        self.setWidget(inner)
        self.bubbles: list[Bubble] = []
        self._pending: list[Bubble] = []  # live questions not yet carried by a turn
        self._follow = True
        self._editing = 0  # correction dialogs open
        self._restore: int | None = None  # a scroll position to keep while a re-read lays out
        self.verticalScrollBar().valueChanged.connect(self._on_scroll)
        self.verticalScrollBar().rangeChanged.connect(self._on_range)

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._restore is not None:
            self.verticalScrollBar().setValue(min(self._restore, hi))
        elif self._follow and not self.editing_now:  # never move the reply being corrected from under the dialog
            self.verticalScrollBar().setValue(hi)

    def _on_editing(self, on: bool) -> None:
        self._editing += 1 if on else -1
        self.editing.emit(self.editing_now)

    @property
    def editing_now(self) -> bool:
        """A correction dialog of one of its replies is open."""
        return self._editing > 0

    def keep_position(self, value: int) -> None:
        """After a re-read of the same transcript: stay where the user was instead of jumping to the end."""
        self._follow = False
        self._restore = value
        QTimer.singleShot(200, self, lambda: setattr(self, "_restore", None))  # once the layout has settled

    def _add(self, bubble: Bubble, *, before: Bubble | None = None) -> Bubble:
        if before is None:
            self._col.addWidget(bubble)
            self.bubbles.append(bubble)
        else:
            self._col.insertWidget(self._col.indexOf(before), bubble)
            self.bubbles.insert(self.bubbles.index(before), bubble)
        bubble.feedback.connect(self.feedback)
        bubble.correction.connect(self.correction)
        bubble.editing.connect(self._on_editing)
        if self._follow and not self.editing_now:
            QTimer.singleShot(0, self, self._scroll_to_end)  # dropped if the view is gone by then
        return bubble

    def _scroll_to_end(self) -> None:
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())

    def add_reply(self, text: str, video_time: float, turn: int, frame: np.ndarray | None = None,
                  *, thumb: QPixmap | None = None, feedback_on: set[str] | None = None) -> Bubble | None:
        """A reply bubble. It goes above questions still pending: those were asked while this turn ran,
        so they ride with the next frames and the reply to them comes later (call :meth:`settle_questions`
        with the turn's question first).

        Shows :func:`shown_text` of ``text``; None when nothing of it is left to show. A reply identical
        to the bubble just above its place is counted there instead (that bubble is returned).
        """
        text = shown_text(text)
        if not text:
            return None
        before = self._pending[0] if self._pending else None
        at = self.bubbles.index(before) if before is not None else len(self.bubbles)
        above = self.bubbles[at - 1] if at > 0 else None
        if above is not None and above.who == "duet" and normalise(above.text) == normalise(text):
            above.add_repeat(turn, clock(video_time), feedback_on)
            return above
        if thumb is None and frame is not None:
            thumb = rgb_to_pixmap(frame, THUMB_W)
        return self._add(Bubble("duet", text, clock(video_time), turn=turn, thumb=thumb, feedback_on=feedback_on,
                                corrections=self.corrections), before=before)

    def add_question(self, text: str, video_time: float | None = None, *, spoken: bool = False,
                     pending: bool = False, loading: bool = False) -> Bubble:
        """A question bubble stamped ``video_time``: for a live question, the moment it was typed.

        ``pending``: asked live and not yet carried by a step. The model may be behind the picture (a
        question typed at 00:02 rode with the step at 00:08), so the stamp keeps the moment of asking
        and says that the answer comes with the next step; :meth:`settle_questions` then names the step
        that carried it. ``loading``: the model is still loading, and the question waits for the first step.
        """
        bubble = self._add(Bubble("you", text, ""))
        bubble.spoken = spoken
        bubble.asked_at = video_time
        if pending:
            wait = "sent with the first step, once the model has loaded" if loading else \
                "the answer comes with the next step"
            bubble.set_stamp(f"{_asked(bubble)} · {wait}")
            self._pending.append(bubble)
        else:
            bubble.set_stamp(_asked(bubble))
        return bubble

    def settle_questions(self, question: str | None, video_time: float) -> None:
        """The pending questions that rode in a step (the session joins them with spaces) say which step."""
        if not question:
            return
        for bubble in [b for b in self._pending if b.text.strip() in question]:
            self._pending.remove(bubble)
            if bubble.asked_at is None:  # no time known when it was asked: the step's is the closest
                bubble.asked_at = video_time
            if clock(video_time) == clock(bubble.asked_at):
                bubble.set_stamp(_asked(bubble))
            else:
                bubble.set_stamp(f"{_asked(bubble)} · sent with the step at {clock(video_time)}")

    def drop_pending(self, why: str) -> None:
        """The session ended with questions no step carried: their bubbles say so (``why``)."""
        for bubble in self._pending:
            bubble.set_stamp(f"{_asked(bubble)} · {why}")
        self._pending.clear()

    def add_notice(self, text: str) -> Bubble:
        return self._add(Bubble("system", text, "note"))

    def clear(self) -> None:
        for b in self.bubbles:
            b.setParent(None)
            b.deleteLater()
        self.bubbles.clear()
        self._pending.clear()
        self._follow = True
        self._editing = 0

    def replies(self) -> list[Bubble]:
        return [b for b in self.bubbles if b.who == "duet"]

    def notices(self) -> list[str]:
        return [b.text for b in self.bubbles if b.who == "system"]
