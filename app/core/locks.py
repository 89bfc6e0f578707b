"""One job of a kind at a time across processes (the app and a terminal): a lock file, never waited on.

Why never wait: the process holding the lock shows its own progress (a pull, a runtime install); the
second caller is told at once what is going on instead of hanging behind it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold the lock file ``path`` for the block, or raise ``busy()`` at once if another process holds it."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout as e:
        raise busy() from e
    try:
        yield
    finally:
        lock.release()
