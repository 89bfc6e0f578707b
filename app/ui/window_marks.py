"""The main window's feedback marks from the Watch chat: written where the session is, or refused in words.

A mixin of :class:`~app.ui.main_window.MainWindow`: it needs the window's controller, chat, banner and
session store together; this module keeps the marks' half apart from the session wiring.
"""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QToolButton

from app.core.errors import describe_write_failure
from app.core.feedback import FeedbackError
from app.core.sessions import SessionStore, add_feedback
from app.ui.watch_panel import WatchPanel


class WindowMarksMixin:
    """Marks ↔ disk for :class:`~app.ui.main_window.MainWindow` (which provides the attributes below)."""

    sessions: SessionStore
    watch: WatchPanel
    # and the window's controller and show_problem

    @Slot(int, str, bool)
    def _on_feedback(self, turn: int, kind: str, on: bool) -> None:
        self.record_mark(turn, kind, on)

    @Slot(int, str)
    def _on_correction(self, turn: int, text: str) -> None:
        self.record_mark(turn, "wrong", True, text)  # a "wrong" mark carrying the correction

    def record_mark(self, turn: int, kind: str, on: bool, text: str = "") -> bool:
        """Write a mark from the Watch chat; False (and the button goes back and says why) when it cannot be.

        While the session runs, its transcript takes the mark. Once it has ended (the clip ran out, Stop)
        the chat still shows its replies, and a mark on them goes to the finished session's file, as the
        Sessions page writes it: a button that lights up must mean the mark is on disk.
        """
        if self.controller.add_feedback(turn, kind, on, text):
            problem = None
        else:
            problem = self._mark_finished_session(turn, kind, on, text)
        for button in self._mark_buttons(turn, kind):
            plain = button.property("plain_tip")
            if problem is None and plain is not None:  # saved now: the "Not saved" of an earlier try goes
                button.setToolTip(plain)
        if problem is None:
            return True
        self._refuse_mark(turn, kind, on, problem)
        return False

    def _mark_buttons(self, turn: int, kind: str) -> list[QToolButton]:
        """The chat's buttons of ``kind`` on the bubble(s) showing the reply of ``turn``."""
        return [b for bubble in self.watch.chat.replies() if turn in bubble.turns
                for b in [bubble.buttons.get(kind)] if b is not None]

    def _mark_finished_session(self, turn: int, kind: str, on: bool, text: str) -> str | None:
        """Append the mark to the latest session's file; None when written, else why it was not."""
        sid = self.controller.last_session_id
        if sid is None:
            return "This session is not being saved (see the message above), so marks on it cannot be kept."
        try:
            add_feedback(self.sessions.find(sid), turn, kind, on, text)
        except FileNotFoundError:
            return (f"The saved session {sid} is gone (deleted, or its folder moved), so this mark could not be "
                    "kept.")
        except FeedbackError as e:
            return f"This mark could not be kept: {e}."
        except OSError as e:
            return describe_write_failure(e, "Your mark could not be saved",
                                          "the session's log is as it was; mark the reply again once there is room")
        return None

    def _refuse_mark(self, turn: int, kind: str, on: bool, why: str) -> None:
        """The button shows what is saved, not what was tried, and its tooltip and the banner say why."""
        self.show_problem(why)
        for button in self._mark_buttons(turn, kind):
            if button.property("plain_tip") is None:
                button.setProperty("plain_tip", button.toolTip())
            button.blockSignals(True)
            button.setChecked(not on)
            button.blockSignals(False)
            button.setToolTip(f"Not saved: {why}")
