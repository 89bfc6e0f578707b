"""Writing files so that a crash, a kill or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path | str, data: bytes, *, fsync: bool = True) -> None:
    """Write to a temporary sibling, then rename over ``path`` (atomic on POSIX and Windows).

    The file is whole or absent even if the process dies mid-write. ``fsync=False`` skips the
    flush to disk (durability against power loss) for callers that sync on their own schedule.
    On failure (e.g. ``ENOSPC``) the old file is untouched and the temporary one is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # say which file failed
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    """UTF-8 text through :func:`write_bytes_atomic`, synced to disk."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def install_pair(staged: list[tuple[Path, Path]]) -> None:
    """Rename finished temporaries over their targets as a set: all of them, or none.

    Each existing target is first moved to a backup; if any rename fails, every target is put back as
    it was. Renames within one folder need no free space, so a full disk cannot strike here — it
    strikes while the temporaries are written, before any old file is touched.
    """
    backups: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in staged:
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, backup)
            backups.append((target, backup))
            os.replace(tmp, target)
    except BaseException:
        for target, backup in reversed(backups):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        raise
    for _target, backup in backups:
        if backup is not None:
            backup.unlink(missing_ok=True)


def append_whole(fd: int, data: bytes, *, fsync: bool = False, fresh_line: bool = False) -> None:
    """Append ``data`` to the file open at ``fd`` as a whole, or not at all.

    Why: on a write error (a full disk) a half-written line would swallow the next record of a
    JSON-lines log; the file is cut back to its size before this record and the error goes up.

    ``fresh_line``: when the file does not end in a newline — its last record was cut short by a
    crash or a kill — a newline is written first, so this record starts a line of its own instead
    of being glued onto the torn one (where a reader would lose both). ``fd`` must then be open for
    reading too (``O_RDWR``).
    """
    size = os.fstat(fd).st_size
    if fresh_line and size and _last_byte(fd, size) != b"\n":
        data = b"\n" + data
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def _last_byte(fd: int, size: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, 1, size - 1)
    os.lseek(fd, size - 1, os.SEEK_SET)  # Windows: no pread; O_APPEND writes still go to the end
    return os.read(fd, 1)
