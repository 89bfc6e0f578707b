"""Files anyone could have put in Duet's way: read only when regular, and bounded; written only when regular.

Why: a path Duet reads from its user folders (a session's ``events.jsonl``, ``settings.toml``,
``library.json``, a pull's state) or a path the user names with ``--out`` can be something other
than a file. Opening a FIFO blocks until a writer appears, which is forever; ``/dev/zero`` (or a
symlink to it) never ends; a multi-gigabyte file read whole exhausts the memory. Each of these hung
or killed Duet before. Here a file is opened without blocking (``O_NONBLOCK``), checked with
``fstat`` to be a regular file *after* opening (so a swap between a check and the open cannot slip
through), and read up to a limit the caller chooses for that kind of file.

The refusal is an :class:`UnsafeFile`: an :class:`InputError` (the CLIs print its message) and an
``OSError`` (the readers that set a damaged file aside or skip it already catch those).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from app.core.errors import InputError
from app.core.sizes import human_bytes

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
    | getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(InputError, OSError):
    """A path that is not a regular file, or larger than its kind of file may be; the message says which."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        InputError.__init__(self, message)
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def describe_kind(mode: int) -> str:
    """What a non-regular file is, in words a user recognises."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path | str) -> BinaryIO:
    """``path`` opened for binary reading, or :class:`UnsafeFile` when it is not a regular file.

    Never blocks on a FIFO: it is opened non-blocking and refused after ``fstat`` says what it is.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path} is {describe_kind(st.st_mode)}, not a regular file; "
                             "Duet does not read it", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file ``path``; one larger than ``limit`` bytes is refused (not read on)."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{path} is larger than {human_bytes(limit)}, more than this kind of file ever "
                         "holds; Duet does not read it", str(path))
    return data


def read_regular_text(path: Path | str, limit: int) -> str:
    """:func:`read_regular` as UTF-8 text (a ``UnicodeDecodeError`` goes up: the caller names the damage)."""
    return read_regular(path, limit).decode("utf-8")


def bounded_lines(fh: BinaryIO, *, max_line: int, max_total: int) -> Iterator[bytes | None]:
    """The lines of ``fh`` (with their newline), reading at most ``max_total`` bytes in all.

    A line longer than ``max_line`` is not kept: ``None`` is yielded in its place (the caller counts it
    as damaged) and the rest of it is skipped without being held in memory.
    """
    total = 0
    while total < max_total:
        line = fh.readline(min(max_line + 1, max_total - total))
        if not line:
            return
        total += len(line)
        if len(line) <= max_line or line.endswith(b"\n"):
            yield line
            continue
        while total < max_total:  # an over-long line: skip to its end, a bounded piece at a time
            rest = fh.readline(min(1 << 20, max_total - total))
            total += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield None


def check_output_file(path: Path | str, flag: str = "--out") -> Path:
    """Refuse an output path that exists and is not a regular file (a FIFO, ``/dev/zero``, a folder).

    Why: writing to a FIFO blocks until a reader appears, and an atomic write's rename would replace
    a device node or a named pipe someone else relies on. A missing file or a regular one is fine.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return p
    except OSError as e:
        raise UnsafeFile(f"{flag} {p}: {e.strerror or e}", str(p)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{flag} {p} is {describe_kind(st.st_mode)}, not a regular file; give the path of "
                         "a file to write", str(p))
    return p
