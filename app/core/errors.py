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


def describe_write_failure(e: OSError, what: str, then: str) -> str:
    """A failed write as the window says it: what was not saved, why (a full disk by name), what now.

    ``what`` names the thing ("Settings could not be saved"), ``then`` says what happens next and
    what was kept ("the settings saved before are kept"). The cause is the OS's, never a traceback.
    """
    import errno

    where = f" (writing {e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}: the disk is full{where}. Free some space; {then}."
    return f"{what}: {e.strerror or e}{where}; {then}."
