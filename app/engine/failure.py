"""How a session's failure reads in the window and the terminal: what failed (the model, the source) first.

A failure to start says so in its own words (:class:`StartError`). A source that stops working and a model
that fails are named as such. The engine's process dying already carries a message written for the user,
with what to do (app/engine/engine_process.py). Anything else is a :class:`~app.core.errors.DuetError`
whose message stands as it is.
"""

from __future__ import annotations

from app.capture.base import CaptureError
from app.core.errors import DuetError
from app.engine.backend import BackendError


class StartError(DuetError):
    """A failure to start whose message is already written for the user."""


def describe_failure(e: DuetError) -> str:
    if isinstance(e, StartError):
        return str(e)
    if isinstance(e, CaptureError):
        return f"The source stopped working: {e}"
    if getattr(e, "fallback", None) is not None:  # the engine's process died: its message is the user's
        return str(e)
    if isinstance(e, BackendError):
        return f"The model failed: {e}"
    return str(e)
