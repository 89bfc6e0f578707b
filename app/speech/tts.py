"""Spoken replies: one pyttsx3 engine on its own thread, fed through a one-slot mailbox.

Why one slot and not a queue: a live commentary goes stale in seconds. When the model says
something new while the previous line is still being spoken, the *waiting* line is replaced
(superseded) rather than read out late, and a line that waited longer than ``max_age`` is dropped.
The line being spoken is finished (cutting a voice mid-word is worse than a short delay).

Why a thread that owns the engine: pyttsx3 engines are not thread-safe and ``runAndWait`` blocks;
the engine is created, configured and run on the same thread (docs/desktop.md §2.1). If no speech
engine can be created (no espeak-ng, no SAPI), the speaker reports it once through ``on_event``
and keeps accepting lines silently, so the app works on.

One speaker per process: pyttsx3 caches one engine per driver and espeak-ng has a single
process-wide synthesis callback, so a second live speaker would steal the first one's audio.

``output_dir`` makes the engine speak to numbered WAV files instead of the sound card: the tests use it
(real espeak-ng, no speaker needed); the app does not offer it, so a full disk there is a test's concern.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("duet.speech")

UTTERANCE_TIMEOUT = 60.0  # seconds a line may take to synthesise (and play) before the speaker moves on

EventCallback = Callable[[str, str], None]  # (kind, detail); called on the speaker's thread

# Engines are kept alive for the life of the process: when a pyttsx3 espeak engine is garbage
# collected its driver resets espeak-ng's *process-wide* synthesis callback to NULL, silencing
# whichever engine was created after it. A strong reference here means that never happens.
_KEEP_ALIVE: dict[str | None, tuple[object, threading.Event]] = {}
# One engine per process, so one thread at a time may drive it: a speaker closed while it was still speaking
# finishes its line before a newer speaker's thread may use the engine.
_ENGINE_LOCK = threading.Lock()
# Let the engines go while the interpreter is still whole: at final teardown pyttsx3's DriverProxy.__del__
# finds its modules already gone and prints an ignored AttributeError.
atexit.register(_KEEP_ALIVE.clear)


@dataclass
class _Line:
    text: str
    queued: float
    serial: int


class Speaker:
    """Speaks the newest reply; see the module docstring for the supersede rules.

    Events passed to ``on_event``: ``ready`` (voice name list follows in :attr:`voices`),
    ``unavailable`` (once, with the reason), ``started``, ``finished`` (detail: the text, or the
    WAV path in file mode), ``superseded``, ``stale``, ``muted``, ``error``.
    """

    def __init__(self, *, driver: str | None = None, output_dir: Path | None = None, voice: str = "",
                 rate: int = 180, muted: bool = False, max_age: float = 10.0,
                 on_event: EventCallback | None = None, autostart: bool = True) -> None:
        self.driver = driver
        self.output_dir = Path(output_dir) if output_dir else None
        self.voice = voice
        self.rate = rate
        self.muted = muted
        self.max_age = max_age
        self.on_event = on_event
        self.available: bool | None = None  # None until the engine thread has tried
        self.error: str | None = None
        self.voices: list[tuple[str, str]] = []  # (id, name)
        self.spoken: list[str] = []  # texts actually spoken, in order (for the UI and tests)
        self.files: list[Path] = []
        self._cond = threading.Condition()
        self._slot: _Line | None = None
        self._serial = 0
        self._closed = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # the engine's end-of-utterance flag (shared by the process's speakers)
        if autostart:
            self.start()

    # ---- any thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            _preload_driver(self.driver)
            self._thread = threading.Thread(target=self._run, name="duet-tts", daemon=True)
            self._thread.start()

    def say(self, text: str) -> None:
        """Offer a line; it replaces any line still waiting (the waiting one is reported superseded)."""
        text = text.strip()
        if not text:
            return
        if self.muted:
            self._emit("muted", text)
            return
        with self._cond:
            old = self._slot
            self._serial += 1
            self._slot = _Line(text, time.monotonic(), self._serial)
            self._cond.notify_all()
        if old is not None:
            self._emit("superseded", old.text)

    def set_muted(self, muted: bool) -> None:
        """Muting also drops the line that is waiting: it would be stale by the time sound is back."""
        self.muted = muted
        if muted:
            with self._cond:
                old, self._slot = self._slot, None
            if old is not None:
                self._emit("superseded", old.text)

    def idle(self) -> bool:
        with self._cond:
            return self._slot is None and not self._busy

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is waiting or being spoken (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: (self._slot is None and not self._busy) or self._closed, timeout)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._slot = None
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- the engine thread --------------------------------------------------------------------
    def _emit(self, kind: str, detail: str = "") -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, detail)
            except Exception:  # a listener's bug must not kill the voice
                log.exception("speech event listener failed")

    def _make_engine(self) -> object | None:
        try:
            import pyttsx3

            with _ENGINE_LOCK:
                kept = _KEEP_ALIVE.get(self.driver)
                if kept is None:
                    engine = pyttsx3.init(self.driver) if self.driver else pyttsx3.init()
                    done = threading.Event()
                    # The driver's own end-of-utterance signal: the espeak driver writes the WAV (or plays it) and
                    # then notifies, sometimes after runAndWait has returned (see _set).
                    engine.connect("finished-utterance", lambda **_kw: done.set())  # type: ignore[attr-defined]
                    kept = _KEEP_ALIVE[self.driver] = (engine, done)
            engine, self._done = kept
            self.voices = [(v.id, v.name) for v in engine.getProperty("voices") or []]
        except Exception as e:  # ImportError, RuntimeError("could not initialize espeak"), OSError …
            self.available = False
            self.error = (f"No speech engine available ({type(e).__name__}: {e}). Replies will be shown but not "
                          "spoken; on Linux install espeak-ng (apt install espeak-ng).")
            self._emit("unavailable", self.error)
            return None
        self.available = True
        self._emit("ready", "")
        return engine

    @staticmethod
    def _set(engine: object, name: str, value: object) -> None:
        """Set a property so that it holds for the *next* utterance.

        pyttsx3 queues ``setProperty`` behind the driver's busy flag, and the espeak driver clears that
        flag from its synthesis callback, sometimes after ``runAndWait`` has returned; a setting made
        in between is then dropped with the queue. So check, and set it on the driver when it did not take.
        """
        engine.setProperty(name, value)  # type: ignore[attr-defined]
        now = engine.getProperty(name)  # type: ignore[attr-defined]
        if str(now).lower() != str(value).lower():
            driver = getattr(getattr(engine, "proxy", None), "_driver", None)
            if driver is not None:
                driver.setProperty(name, value)

    def _configure(self, engine: object) -> None:
        try:
            self._set(engine, "rate", int(self.rate))
            if self.voice:
                self._set(engine, "voice", self.voice)
        except Exception as e:  # an unknown voice id must not stop the speech
            self._emit("error", f"voice settings not applied: {e}")

    def _next_line(self) -> _Line | None:
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._closed)
            if self._closed:
                return None
            line, self._slot = self._slot, None
            self._busy = True
            return line

    def _run(self) -> None:
        engine = self._make_engine()
        n = 0
        while (line := self._next_line()) is not None:
            try:
                if engine is None or self.muted:
                    continue
                if time.monotonic() - line.queued > self.max_age:
                    self._emit("stale", line.text)
                    continue
                self._emit("started", line.text)
                path = None
                if self.output_dir is not None:
                    self.output_dir.mkdir(parents=True, exist_ok=True)
                    n += 1
                    path = self.output_dir / f"reply-{n:04d}.wav"
                with _ENGINE_LOCK:
                    self._configure(engine)
                    self._done.clear()
                    if path is not None:
                        engine.save_to_file(line.text, str(path))  # type: ignore[attr-defined]
                    else:
                        engine.say(line.text)  # type: ignore[attr-defined]
                    engine.runAndWait()  # type: ignore[attr-defined]
                    if not self._done.wait(UTTERANCE_TIMEOUT):
                        log.warning("the speech engine did not report the end of %r", line.text)
                if path is not None:
                    _wait_written(path)
                    self.files.append(path)
                detail = str(path) if path is not None else line.text
                self.spoken.append(line.text)
                self._emit("finished", detail)
            except Exception as e:
                self._emit("error", f"speaking failed: {type(e).__name__}: {e}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _wait_written(path: Path, timeout: float = 10.0) -> None:
    """Return once ``path`` has stopped growing.

    pyttsx3's espeak driver can finish writing the file from its synthesis callback after
    ``runAndWait`` has returned (see ``_set``), so "finished" would otherwise name a file still being written.
    """
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else -1
        if size != last:
            last, stable_since = size, time.monotonic()
        elif size > 44 and time.monotonic() - stable_since >= 0.25:  # past the header, unchanged for 250 ms
            return  # (one 50 ms poll was not enough on a busy machine: espeak writes in bursts)
        time.sleep(0.05)


def _preload_driver(driver: str | None) -> None:
    """Load espeak's shared library on the thread that starts the speaker (the GUI thread), not on ours.

    Why: ctypes keeps the GIL while ``dlopen`` waits for the dynamic loader's lock. If the GUI thread
    is loading a Qt plugin at that moment (QtMultimedia's, when the window builds its video player)
    and that plugin logs through a Python message handler (pytest-qt installs one), each thread waits
    for the lock the other holds and the app hangs at start. Loaded here, the engine thread finds the
    library already imported and never calls ``dlopen``.
    """
    if not sys.platform.startswith("linux") or driver not in (None, "espeak"):
        return
    try:
        import pyttsx3.drivers._espeak  # noqa: F401 - imported for its side effect: the dlopen
    except Exception:  # noqa: BLE001 - the engine thread reports a missing espeak with the real reason
        pass
