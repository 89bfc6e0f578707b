"""Spoken questions to text with whisper.cpp (pywhispercpp), in a child process.

Why a child process: the pywhispercpp wheel carries its own ggml, a different version from the one
inside llama-cpp-python; two ggml copies in one process is untested territory (docs/desktop.md §2.3), and whisper.cpp aborts the whole process on a damaged model
file. In a child, a crash costs one transcription and a message, never the session.

Models are ``ggml-<name>.bin`` files from the ``ggerganov/whisper.cpp`` Hugging Face repository,
downloaded like every other model (verified, resumable: app/modelhub/hub.py), into ``<data>/speech/``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.core.errors import ResourceError
from app.core.paths import user_dir

WHISPER_REPO = "ggerganov/whisper.cpp"
MODEL_SIZES_MB = {"tiny.en": 75, "base.en": 142, "small.en": 466, "tiny": 75, "base": 142, "small": 466}
GGML_MAGIC = b"lmgg"  # 0x67676d6c little-endian, the first four bytes of every whisper.cpp model


class SpeechModelError(ResourceError):
    """The speech model is missing, damaged, cannot be downloaded, or its process died."""


def models_dir() -> Path:
    return user_dir("speech")


def model_filename(name: str) -> str:
    return f"ggml-{name}.bin"


def find_model(name: str, directory: Path | None = None) -> Path | None:
    path = (directory or models_dir()) / model_filename(name)
    return path if path.is_file() else None


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise SpeechModelError(f"{path}: speech model not found; download it in Settings › Speech")
    with open(path, "rb") as fh:
        if fh.read(4) != GGML_MAGIC:
            raise SpeechModelError(f"{path}: not a whisper.cpp model (bad magic); delete it and download again")


def download_model(name: str, directory: Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch ``ggml-<name>.bin`` through the model manager's hub client; ``progress(done, total)`` in bytes.

    Same path as ``duet models pull`` (app/modelhub/hub.py): the file's sha256 is checked against the
    hub's listing, an interrupted download continues where it stopped, and each failure says what to do.
    """
    from app.modelhub import hub

    directory = directory or models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fname = model_filename(name)
    try:
        listing = hub.list_repo(WHISPER_REPO)
        remote = next((f for f in listing.files if f.name == fname), None)
        if remote is None:
            raise SpeechModelError(f"{WHISPER_REPO} has no {fname}; choose another speech model in Settings › Speech")
        done = [hub.partial_bytes(directory, fname)]

        def on_bytes(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], remote.size)

        return hub.download(WHISPER_REPO, listing.commit, remote, directory, on_bytes)
    except hub.HubError as e:
        if e.kind == "offline":
            raise SpeechModelError(f"Cannot download the speech model {name!r}: offline ({e}). "
                                   f"Put {fname} into {directory} by hand, or go online.") from e
        raise SpeechModelError(f"Downloading the speech model {name!r} failed: {e}") from e
    except OSError as e:
        raise SpeechModelError(f"Downloading the speech model {name!r} failed: {e}") from e


def _serve(conn: object, model_path: str, n_threads: int) -> None:
    """The child: load once, then answer ("text", str) or ("error", msg) for every audio array."""
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # an abort should not attach gdb and dump stacks
    try:
        from pywhispercpp.model import Model

        model = Model(model_path, redirect_whispercpp_logs_to=None, n_threads=n_threads,
                      print_progress=False, print_realtime=False)
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))  # type: ignore[attr-defined]
        return
    conn.send(("ready", ""))  # type: ignore[attr-defined]
    while True:
        try:
            audio = conn.recv()  # type: ignore[attr-defined]
        except EOFError:
            return
        if audio is None:
            return
        try:
            segments = model.transcribe(audio)
            conn.send(("text", " ".join(s.text.strip() for s in segments).strip()))  # type: ignore[attr-defined]
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))  # type: ignore[attr-defined]


class Transcriber:
    """A whisper.cpp model alive in a child process; :meth:`transcribe` blocks (call it off the GUI thread)."""

    def __init__(self, model_path: Path, *, n_threads: int = 2, load_timeout: float = 120.0) -> None:
        check_model_file(model_path)
        self.model_path = model_path
        ctx = mp.get_context("spawn")  # never fork a process that runs Qt and llama.cpp threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(model_path), n_threads), daemon=True,
                                 name="duet-whisper")
        self._proc.start()
        child.close()
        kind, msg = self._receive(load_timeout)
        if kind != "ready":
            self.close()
            raise SpeechModelError(f"The speech model {model_path.name} could not be loaded: {msg}")

    def _receive(self, timeout: float) -> tuple[str, str]:
        try:
            if not self._conn.poll(timeout):
                return "error", f"no answer within {timeout:g} s"
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            return "error", f"the speech engine crashed (exit code {self._proc.exitcode})"

    def transcribe(self, audio: np.ndarray, timeout: float = 120.0) -> str:
        if not self._proc.is_alive():
            raise SpeechModelError(f"the speech engine is not running (exit code {self._proc.exitcode})")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size < 1600:  # < 0.1 s: whisper would hallucinate on silence
            return ""
        try:
            self._conn.send(audio)
        except (OSError, BrokenPipeError) as e:
            raise SpeechModelError(f"the speech engine is gone: {e}") from e
        kind, msg = self._receive(timeout)
        if kind != "text":
            raise SpeechModelError(f"Transcription failed: {msg}")
        return msg

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(3)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(3)
        self._conn.close()
