"""The session controller: one watching session's state, settings, transcript and source health.

It is Qt-free so the GUI, ``duet run`` and the tests drive a session the same way:

- :meth:`SessionController.run` runs a whole session on the calling thread (the GUI's worker
  thread, the CLI's main thread, a test) and returns why it ended;
- control comes from any thread: :meth:`ask`, :meth:`pause`, :meth:`resume`, :meth:`stop`,
  :meth:`set_talkativeness`, :meth:`add_feedback`;
- everything that happens is reported as a typed event (:data:`Event`) to one listener, on the
  thread where it happened (the GUI's worker turns them into queued signals).

States: ``idle → loading → running ⇄ paused → stopping → idle`` (:class:`State`).

Pause keeps time. A source that owns its clock (a video file) holds it: after resume the video
continues from the same moment and the frames of a turn stay contiguous. A live source (camera,
screen) cannot stop the world: the pause becomes an explicit gap — a :class:`Gap` event and a
``gap`` record in the transcript — and the frames collected before it are dropped, so a turn never
holds frames from two different moments.

The backend stays loaded between sessions (loading is the slow part) and is only freed when no
step can be using it (:meth:`release_backend`). What a session records on disk goes through its
:class:`~app.engine.transcript.Transcript`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from app.capture.base import FrameSource, SourceHealth
from app.core.config import SessionConfig
from app.core.errors import DuetError
from app.core.sessions import SessionStore, SessionWriter
from app.core.types import Frame, StepResult
from app.engine.backend import Backend
from app.engine.events import (
    EndReason,
    Event,
    Failed,
    Finished,
    FrameSampled,
    Gap,
    HealthChanged,
    Listener,
    Loading,
    Problem,
    Started,
    State,
    StateChanged,
    StepDone,
)
from app.engine.factory import BackendFactory, RunRequest, SourceFactory, default_backend, recorded_model
from app.engine.failure import StartError, describe_failure
from app.engine.frame_tap import FrameTap, close_quietly
from app.engine.model_slot import ModelSlot
from app.engine.session import ProactiveSession
from app.engine.transcript import Transcript

__all__ = ["EndReason", "Event", "Failed", "Finished", "FrameSampled", "Gap", "HealthChanged", "Listener", "Loading", "Problem",
           "RunRequest", "SessionController", "BackendFactory", "SourceFactory", "Started", "State", "StateChanged", "StepDone", "default_backend"]

log = logging.getLogger("duet.controller")


class SessionController:
    """See the module docstring. One controller runs one session at a time, and can run many in turn."""

    def __init__(self, backend_factory: BackendFactory = default_backend, source_factory: SourceFactory | None = None,
                 *, store: SessionStore | None = None, listener: Listener | None = None,
                 exclude: object = None) -> None:
        emit = weakref.WeakMethod(self._emit)
        self.model = ModelSlot(backend_factory, loading=lambda what: _call_alive(emit, Loading(what)),
                               status=lambda message: _call_alive(emit, Problem(message)))
        self.source_factory = source_factory
        self.listener = listener
        self.exclude = exclude  # windows a screen source hides while grabbing (the overlay)
        self.session: ProactiveSession | None = None
        self.source: FrameSource | None = None
        # The transcript reports through this controller without holding it: a controller ↔ transcript
        # cycle would leave the controller, and the model it holds, to Python's cyclic GC, which frees
        # it on whatever thread it happens to run (a native crash when that is not the GUI's).
        emit = weakref.WeakMethod(self._emit)
        self.transcript = Transcript(store, lambda event: _call_alive(emit, event))
        self.last_result: StepResult | None = None  # the newest step, for the time stamp of a question
        self._state = State.IDLE
        self._lock = threading.RLock()
        self._resume = threading.Event()
        self._resume.set()
        self._paused_at: float | None = None  # when the latest pause began
        self._resumed_at: float | None = None  # when it ended
        self._pauses = 0  # pauses so far; the loop compares with the ones it has handled
        self._pauses_seen = 0
        self._held = False  # the source held its own clock for the current pause
        self._reserved = False  # reserve() claimed the controller for the next run() (the GUI's Start)
        self._health = SourceHealth.OK
        self._early: list[tuple[str, bool, float | None, float | None]] = []  # questions asked while loading (ask)
        self._seen: tuple[float, float] | None = None  # the newest frame's time, and when it came (stream_time)
        self._prepared: tuple[str, FrameSource] | None = None  # prepare()'s opened source, for the run after it

    # ---- state --------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend | None:
        """The model loaded now (kept between sessions: :class:`~app.engine.model_slot.ModelSlot`)."""
        return self.model.backend

    @property
    def fallback(self) -> dict[str, object]:
        """The safer settings every start uses since the engine's process died (empty before)."""
        return self.model.fallback

    @property
    def state(self) -> State:
        return self._state

    @property
    def writer(self) -> SessionWriter | None:
        """The running session's saved transcript (None: not saved, or a write failed)."""
        return self.transcript.writer

    @property
    def last_session_id(self) -> str | None:
        """The id of the latest run's saved session (None: it was not saved)."""
        return self.transcript.session_id

    def _emit(self, event: Event) -> None:
        if self.listener is not None:
            try:
                self.listener(event)
            except Exception:  # a broken listener must not kill the session
                log.exception("session listener failed on %s", type(event).__name__)

    def _move(self, to: State, *, allowed: tuple[State, ...]) -> bool:
        """The one way the state changes: to ``to`` if it is one of ``allowed`` now, atomically (callers hold the
        lock for what goes with the change, and say it with :meth:`_said` once they let go). Whether a session
        is on (not IDLE), stopping (STOPPING) or paused is read from the state alone, never from flags beside it."""
        with self._lock:
            if self._state not in allowed:
                return False
            self._state = to
            return True

    def _said(self, state: State) -> None:
        self._emit(StateChanged(state))

    @property
    def _stopping(self) -> bool:
        return self._state is State.STOPPING

    # ---- control from any thread --------------------------------------------------------------
    def ask(self, text: str, *, spoken: bool = False, at: float | None = None, asked_at: float | None = None) -> bool:
        """Queue a question for the next turn (or the first at/after video time ``at``); False when no session is
        starting or running to take it. ``asked_at``: the stream time it was typed at, kept in the transcript.

        One asked while the model loads is kept here and goes with the first step: refusing it made the user
        wait for a state they cannot see, and type it again."""
        text = text.strip()
        with self._lock:
            session, early = self.session, self._state is State.LOADING
            if text and early:
                self._early.append((text, spoken, at, asked_at))
        if early or not text or session is None or self._state not in (State.RUNNING, State.PAUSED):
            return bool(text) and early
        session.ask(text, at=at)
        self.transcript.question(text, spoken=spoken, asked_at=asked_at)
        return True

    @property
    def stream_time(self) -> float:
        """The stream's time now, to stamp a question when it is typed rather than when a step carries it:
        a video file's own clock (what it plays), else the newest frame's time plus the wall time since."""
        playing = getattr(self.source, "playing_at", None)
        if isinstance(playing, (int, float)):
            return float(playing)
        seen = self._seen
        if seen is None:
            return self.video_time
        return seen[0] + (0.0 if self._state == State.PAUSED else time.monotonic() - seen[1])

    @property
    def video_time(self) -> float:
        """The session's clock: video time after the newest turn (0 before the first)."""
        session = self.session
        return session.video_time if session is not None else 0.0

    def pause(self) -> bool:
        """Hold the stream; the step inside the model (if any) still finishes. False if not running."""
        with self._lock:
            if not self._move(State.PAUSED, allowed=(State.RUNNING,)):
                return False
            self._resume.clear()
            self._paused_at = time.monotonic()
            self._resumed_at = None
            self._pauses += 1
            source = self.source
            self._held = bool(source.pause()) if source is not None else False
        self._said(State.PAUSED)
        return True

    def resume(self) -> bool:
        with self._lock:
            if not self._move(State.RUNNING, allowed=(State.PAUSED,)):
                return False
            source = self.source
            if source is not None and self._held:
                source.resume()
            self._resumed_at = time.monotonic()
        self._said(State.RUNNING)
        self._resume.set()
        return True

    def toggle_pause(self) -> bool:
        return self.resume() if self._state == State.PAUSED else self.pause()

    def stop(self) -> None:
        """Ask the session to end soon; returns at once (the source is closed from a helper thread,
        because closing a screen source from the GUI thread could deadlock with its overlay hiding)."""
        with self._lock:
            if not self._move(State.STOPPING, allowed=(State.LOADING, State.RUNNING, State.PAUSED)):
                return
            session, source = self.session, self.source
        self._said(State.STOPPING)
        self._resume.set()
        if session is not None:
            session.stop()
        if source is not None:
            threading.Thread(target=close_quietly, args=(source,), name="duet-close-source", daemon=True).start()

    def set_talkativeness(self, value: float) -> None:
        """Change how talkative the running session is, from its next step (range-checked)."""
        session = self.session
        if session is not None:
            SessionConfig(talkativeness=value)  # validates, with the range in the message
            session.config.talkativeness = float(value)

    def add_feedback(self, turn: int, kind: str, on: bool = True, note: str = "") -> bool:
        """Attach the user's feedback to a reply of the running session's transcript."""
        return self.transcript.feedback(turn, kind, on, note)

    def mark_folded(self, turn: int) -> None:
        """The GUI folded this reply into an earlier one on screen; the transcript keeps it, marked."""
        self.transcript.fold(turn)

    def release_backend(self) -> None:
        """Free the model now if no session uses it, else as soon as the running one ends."""
        with self._lock:  # decided under the lock: no Start can take the model between the check and the release
            backend = self.model.release(in_use=self._state is not State.IDLE)
            prepared, self._prepared = self._prepared, None  # a source prepare() opened for a run that never came
        for thing in (backend, prepared[1] if prepared else None):
            if thing is not None:
                thing.close()

    # ---- source health ------------------------------------------------------------------------
    def check_health(self) -> SourceHealth:
        """Read the source's health; a change is reported once as :class:`HealthChanged`."""
        source = self.source
        if source is None:
            return self._health
        try:
            health, detail = source.health, source.status
        except Exception:  # a source being closed on another thread
            return self._health
        with self._lock:  # the GUI's poll and the loop thread both call this: one report per change
            if health == self._health:
                return health
            self._health = health
        self._emit(HealthChanged(health, detail, source.name))
        return health

    # ---- the session (caller's thread) --------------------------------------------------------
    def reserve(self) -> bool:
        """Claim the controller for a session about to start (idle → loading); False if one is on.

        A GUI calls this on its own thread when Start is pressed, then hands :meth:`run` to its
        worker thread: a second click can then never queue a second session.
        """
        if not self._claim():
            return False
        with self._lock:
            self._reserved = True
        return True

    def _claim(self) -> bool:
        """idle → loading, with this run's fresh bookkeeping; False if a session is on."""
        with self._lock:
            if not self._move(State.LOADING, allowed=(State.IDLE,)):
                return False
            self._resume.set()
            self._health = SourceHealth.OK
            self._pauses_seen = self._pauses
            self.transcript.reset()
            self.last_result = None
            self._early, self._seen = [], None
        self._said(State.LOADING)
        return True

    def run(self, request: RunRequest) -> EndReason:
        """Run one session to its end and return why it ended."""
        with self._lock:
            reserved, self._reserved = self._reserved, False
        if not reserved and not self._claim():
            raise RuntimeError("a session is already running on this controller")
        reason = EndReason.ENDED
        try:
            reason = self._run(request)
        except DuetError as e:
            reason = EndReason.ERROR
            crash = next((x for x in (e, e.__cause__) if getattr(x, "fallback", None) is not None), None)
            if crash is not None:  # the engine's process died (app/engine/engine_process.py): never reuse it
                self.model.drop_dead(crash)
            self._emit(Failed(describe_failure(e)))
        except Exception as e:  # never die silently: the user gets the message, the log the traceback
            log.exception("session crashed")
            reason = EndReason.ERROR
            self._emit(Failed(f"Unexpected error: {type(e).__name__}: {e}"))
        finally:
            self._finish(reason)
        return reason

    def _run(self, request: RunRequest) -> EndReason:
        try:
            backend = self.model.ensure(request)
        except (DuetError, OSError) as e:
            raise StartError(f"The model could not be loaded: {e}") from e
        source = self._open_source(request)
        with self._lock:
            self.source = source
            if self._stopping:  # stop was pressed while the model or source was loading
                return EndReason.STOPPED
            self.session = session = ProactiveSession(backend, request.config)
        for text, at in request.questions:
            session.ask(text, at=at)
        device = backend.device
        self.transcript.open(request, device, source.name, recorded_model(request, backend))
        with self._lock:
            # the questions asked while loading go now: ask() queues no more once the state changes
            go = self._move(State.RUNNING, allowed=(State.LOADING,))
            early, self._early = self._early, []
        for text, spoken, at, asked_at in early if go else ():
            session.ask(text, at=at)
            self.transcript.question(text, spoken=spoken, asked_at=asked_at)
        if go:
            self._said(State.RUNNING)
        self._emit(Started(device, source.name))
        tap = FrameTap(source, stopping=lambda: self._stopping, hold=self._hold_while_paused,
                       check_health=self.check_health, passed=self._frame_passed)
        for result in session.run(tap):
            self.last_result = result
            self.transcript.step(result)
            self._emit(StepDone(result))
            if self._stopping:
                break
        if self._stopping:
            return EndReason.STOPPED
        cap = request.config.max_turns
        return EndReason.MAX_TURNS if cap and session.turn >= cap else EndReason.ENDED

    def prepare(self, request: RunRequest) -> Backend:
        """Open the source, then load the model (or keep the one loaded): what :meth:`run` starts with.

        ``duet run`` calls it first, so a bad source fails before the slow part and the terminal can say what
        runs where; :meth:`run` (the GUI's Start) does the same steps itself. A failure is the DuetError that
        says what is wrong, and nothing stays open.
        """
        source = self._build_source(request)
        source.open()
        try:
            backend = self.model.ensure(request)
        except BaseException:
            close_quietly(source)
            raise
        with self._lock:
            self._prepared = (request.source, source)
        return backend

    def _build_source(self, request: RunRequest) -> FrameSource:
        with self._lock:
            prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == request.source:
            return prepared[1]
        if prepared is not None:
            close_quietly(prepared[1])
        if self.source_factory is not None:
            return self.source_factory(request)
        from app.capture.parse import build_source

        return build_source(request.source, realtime=request.realtime, exclude=self.exclude)

    def _open_source(self, request: RunRequest) -> FrameSource:
        source = self._build_source(request)
        self._emit(Loading(f"Opening {source.name}…"))
        try:
            source.open()
        except BaseException:
            close_quietly(source)
            raise
        return source

    def _finish(self, reason: EndReason) -> None:
        with self._lock:
            source, self.source = self.source, None
            self.session = None
            self._resume.set()
            self._paused_at = None
            self._pauses_seen = self._pauses
            self._early = []  # asked while a start failed: the window says they were not sent
        if source is not None:
            close_quietly(source)
        self.transcript.close(reason.value)  # a session that never got a turn (the reason was shown) leaves none
        with self._lock:
            self._move(State.IDLE, allowed=tuple(State))
            backend = self.model.session_ended()
        if backend is not None:
            backend.close()
        self._said(State.IDLE)
        self._emit(Finished(reason))

    # ---- the loop thread, called by its FrameTap ----------------------------------------------
    def _frame_passed(self, frame: Frame) -> None:
        self._seen = (frame.time, time.monotonic())
        self._emit(FrameSampled(frame))

    def _hold_while_paused(self) -> bool:
        """Block while paused. True when the frame in hand must be dropped (a live source's gap).

        Pauses are counted, so even a pause shorter than one interval that began and ended
        between two frames is seen as a gap in a live stream.
        """
        self._resume.wait()
        with self._lock:
            if self._pauses == self._pauses_seen:
                return False
            self._pauses_seen = self._pauses
            held, paused_at, resumed_at = self._held, self._paused_at, self._resumed_at
        if held or self._stopping or paused_at is None:
            return False  # the source held its clock: the frame in hand is the very next moment
        seconds = max(0.0, (resumed_at or time.monotonic()) - paused_at)
        session = self.session
        dropped = session.break_turn() if session is not None else 0
        at = session.video_time if session is not None else 0.0
        self.transcript.gap(at, seconds, dropped)
        self._emit(Gap(at, seconds, dropped))
        return True


def _call_alive(method: weakref.WeakMethod, event: Event) -> None:
    bound = method()
    if bound is not None:
        bound(event)
