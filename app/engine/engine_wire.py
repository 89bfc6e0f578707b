"""What crosses between the app and its engine process: length-prefixed JSON messages and frames in
shared memory.

No pickle: a message is 4 bytes of length then UTF-8 JSON, so neither side ever runs code the other
sent. Frames do not go through the pipe: the app writes them into one shared-memory block that grows
when a turn needs more, and the message carries only their offsets and shapes. The protocol is
strictly request/reply, so the block is never written while the engine reads it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import Any, BinaryIO

import numpy as np

MAX_MESSAGE = 64 * 2**20  # a message is settings or a step's text and numbers: far below this
_HEADER = struct.Struct("<I")


class WireClosed(EOFError):
    """The other side is gone (its end of the pipe closed)."""


def send(stream: BinaryIO, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise WireClosed("the other side closed the pipe")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv(stream: BinaryIO) -> dict[str, Any]:
    (n,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    if n > MAX_MESSAGE:
        raise ValueError(f"engine message of {n} bytes refused (at most {MAX_MESSAGE})")
    message = json.loads(_read_exact(stream, n))
    if not isinstance(message, dict):
        raise ValueError("engine message is not a JSON object")
    return message


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the app's block without adopting it: the engine must never unlink what the app owns
    (before Python 3.13, attaching registers the block with this process's resource tracker)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # 3.13+
    except TypeError:
        shm = shared_memory.SharedMemory(name=name)
        try:
            from multiprocessing import resource_tracker

            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - only a warning at exit is at stake
            pass
        return shm


class FrameWriter:
    """The app's side: one growing shared-memory block the frames of a turn are copied into."""

    def __init__(self) -> None:
        self.shm: shared_memory.SharedMemory | None = None

    def put(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Copy ``images`` (uint8 arrays) into the block; returns their descriptor for the message."""
        arrays = [np.ascontiguousarray(img, dtype=np.uint8) for img in images]
        total = sum(a.nbytes for a in arrays)
        if total and (self.shm is None or self.shm.size < total):
            self.close()
            self.shm = shared_memory.SharedMemory(create=True, size=max(total, 1 << 20))
        layout, offset = [], 0
        for a in arrays:
            if a.nbytes:
                assert self.shm is not None
                self.shm.buf[offset:offset + a.nbytes] = a.reshape(-1).data
            layout.append({"offset": offset, "shape": list(a.shape)})
            offset += a.nbytes
        return {"shm": self.shm.name if (self.shm is not None and total) else None, "frames": layout}

    def close(self) -> None:
        if self.shm is not None:
            shm, self.shm = self.shm, None
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass


class FrameReader:
    """The engine's side: attaches to the app's current block and reads frames out of it."""

    def __init__(self) -> None:
        self.shm: shared_memory.SharedMemory | None = None

    def get(self, descriptor: dict[str, Any]) -> list[np.ndarray]:
        name = descriptor.get("shm")
        frames = descriptor.get("frames") or []
        if not frames:
            return []
        if name is None:
            return [np.zeros(f["shape"], np.uint8) for f in frames]
        if self.shm is None or self.shm.name.lstrip("/") != str(name).lstrip("/"):
            self.close()
            self.shm = _attach(name)
        out = []
        for f in frames:
            shape = tuple(int(x) for x in f["shape"])
            n = int(np.prod(shape))
            off = int(f["offset"])
            if off < 0 or off + n > self.shm.size:
                raise ValueError("frame outside the shared block")
            # A copy: the engine's embedding cache may keep a frame past this turn, and the app rewrites
            # the block next turn (a few hundred KB, well under a millisecond).
            out.append(np.frombuffer(self.shm.buf, np.uint8, n, off).reshape(shape).copy())
        return out

    def close(self) -> None:
        if self.shm is not None:
            shm, self.shm = self.shm, None
            shm.close()
