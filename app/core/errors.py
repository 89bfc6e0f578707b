"""One root for every failure Duet reports to a person: :class:`DuetError`.

Why one root: the CLIs and the GUI catch ``DuetError`` and show its message as it is (the message
is written for the user and says what to do). Anything else that escapes is a programming bug and
is reported as one, with a traceback, instead of being dressed up as "bad input".

The two user-facing families say who can fix it:

- :class:`InputError` — something the user gave (a flag, a setting, a file) is not acceptable.
  It is also a ``ValueError`` so code that validates values reads naturally.
- :class:`ResourceError` — something Duet needs (a device, a model, a server, disk) does not work.
  It is also a ``RuntimeError``.

Subsystems subclass these (``CaptureError``, ``BackendError``, ``ModelFileError`` …) so the message
stays specific while the catch stays in one place.
"""

from __future__ import annotations


class DuetError(Exception):
    """A failure whose message is written for the user and says what to do about it."""


class InputError(DuetError, ValueError):
    """A value, flag, setting or file the user supplied is not acceptable; the message names it."""


class ResourceError(DuetError, RuntimeError):
    """A device, model, server or file Duet needs is missing or failed; the message says which."""


class SettingError(InputError):
    """A setting outside its valid range; the message gives the range (see :mod:`app.core.config`)."""


def describe(exc: BaseException) -> str:
    """The one wording of any failure for a person: the CLI, the window and the server all use it.

    A :class:`DuetError` is shown as it is (its message was written for the user). An ``OSError`` is
    said by its cause, a full disk by name and with what to do, never as ``[Errno 28] …``. Anything
    else is a bug in Duet and says so, with its type, so that a report names it.
    """
    if isinstance(exc, DuetError):
        return str(exc)
    if isinstance(exc, OSError):
        if _disk_full(exc):
            return f"{_full_sentence(exc)} and try again (what was saved before is kept)"
        reason = exc.strerror or str(exc)
        return f"{exc.filename}: {reason}" if exc.filename else reason
    if type(exc).__name__ == "OperationalError" and "full" in str(exc):  # sqlite3: "database or disk is full"
        return "the disk is full. Free some space and try again (what was saved before is kept)"
    return f"Unexpected error: {type(exc).__name__}: {exc}"


def _disk_full(e: OSError) -> bool:
    import errno

    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def _full_sentence(e: OSError) -> str:
    where = f" (writing {e.filename})" if e.filename else ""
    return f"the disk is full{where}. Free some space"


def describe_write_failure(e: OSError, what: str, then: str) -> str:
    """A failed write as the window says it: what was not saved, why (a full disk by name), what now.

    ``what`` names the thing ("Settings could not be saved"), ``then`` says what happens next and
    what was kept ("the settings saved before are kept"). The cause is the OS's, never a traceback;
    a full disk reads as in :func:`describe`.
    """
    if _disk_full(e):
        return f"{what}: {_full_sentence(e)}; {then}."
    where = f" (writing {e.filename})" if e.filename else ""
    return f"{what}: {e.strerror or e}{where}; {then}."
