"""Names from outside that become paths, and folders that cannot be folders.

Why this module: a name someone else chose — a file listed by a model hub, a session id typed on
the command line — is joined to one of Duet's folders. ``folder / "../../x"`` or ``folder / "/etc/x"``
is a path *outside* it, and every file operation on it (write, verify-then-delete, move) then
happens there. Such a name is refused before any file operation, not cleaned up: a cleaned name
would be a different file than the one the source meant.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.core.errors import InputError

_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeName(InputError):
    """A name that would reach outside the folder it is meant for; the message names it and why."""

    def __init__(self, message: str, name: object, reason: str) -> None:
        super().__init__(message)
        self.name, self.reason = name, reason


def plain_relative_name(name: object, what: str = "file name") -> str:
    """``name`` if it is a plain relative path inside its folder, else :class:`UnsafeName`.

    Plain means: a non-empty string of ``/``-separated parts, none of them empty, ``.`` or ``..``; not
    absolute; no backslash (a separator on Windows), no ``:`` (a drive or an NTFS stream), no NUL
    or other control character.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"{what} {name!r} is not a plain relative name", name,
                         "it is not a non-empty string")
    problem = None
    if _CONTROL.search(name):
        problem = "it holds a control character"
    elif "\\" in name:
        problem = "it holds a backslash"
    elif name.startswith("/") or _DRIVE.match(name) or os.path.isabs(name):
        problem = "it is an absolute path"
    elif ":" in name:
        problem = "it holds a ':'"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "it has an empty, '.' or '..' part"
    if problem:
        raise UnsafeName(f"{what} {name!r} is not a plain relative name ({problem})", name, problem)
    return name


def folder_problem(folder: Path, *, env: str | None = None) -> str | None:
    """Why ``folder`` cannot be created or used as a folder (a file in its place or above it), or None.

    Walks up to the first part that exists: if that is not a folder, nothing below it can be made.
    ``env`` names the environment variable the folder came from, so the message says what to change.
    """
    p = Path(folder)
    for candidate in (p, *p.parents):
        try:
            if candidate.is_dir():
                return None
            if candidate.exists() or candidate.is_symlink():
                hint = f"point {env} at a folder (or unset it)" if env and os.environ.get(env) else \
                    "move that file away"
                return f"{candidate} is a file, not a folder, so {folder} cannot be used; {hint}"
        except OSError as e:
            return f"{candidate}: {e.strerror or e}"
    return None


def user_dir(part: str, *, config: bool = False) -> Path:
    """Where Duet keeps ``part`` (``"models"``, ``"sessions"``, ``"speech"`` …) for this user: the one lookup.

    ``DUET_DATA_DIR`` (tests, portable installs, a bigger disk) holds everything when set; otherwise the
    platform's per-user data folder, or its config folder for ``config=True`` (the server's API key).
    """
    env = os.environ.get("DUET_DATA_DIR")
    if env:
        return Path(env) / part if part else Path(env)
    import platformdirs

    base = platformdirs.user_config_dir("duet") if config else platformdirs.user_data_dir("duet")
    return Path(base) / part if part else Path(base)
