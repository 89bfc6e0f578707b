"""The session controller without Qt: start, question, pause (video clock held / live gap), source lost, stop.

Real tiny model through llama.cpp, real video files; only the webcam is fake (no camera here).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.capture.base import FrameSource, SourceHealth
from app.capture.camera import CameraSource
from app.capture.video import VideoFileSource
from app.core.config import BackendSettings, SessionConfig
from app.core.sessions import SessionStore, load_session
from app.core.types import StepResult
from app.engine.controller import (
    EndReason,
    Failed,
    Finished,
    FrameSampled,
    Gap,
    HealthChanged,
    RunRequest,
    SessionController,
    State,
    StateChanged,
    StepDone,
)
from app.engine.factory import make_backend

from ..capture.test_camera import FakeWebcam

LONG = 60.0


def _wait(pred, timeout: float = LONG) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


class Recorder:
    """The listener: keeps every event, like the GUI's worker turns them into signals."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def steps(self) -> list[StepResult]:
        return [e.result for e in self.of(StepDone)]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model):
    backend = make_backend(str(tiny_model.model), str(tiny_model.mmproj), BackendSettings(n_ctx=4096))
    yield backend
    backend.close()


def _controller(backend, source_factory, tmp_path: Path | None = None) -> tuple[SessionController, Recorder]:
    rec = Recorder()
    store = SessionStore(tmp_path / "sessions") if tmp_path is not None else None
    return SessionController(lambda _r: backend, source_factory, store=store, listener=rec), rec


_RUNNING: list[tuple[SessionController, threading.Thread]] = []


@pytest.fixture(autouse=True)
def _stop_sessions():
    """A failed test must not leave a session decoding while the shared backend is freed."""
    yield
    while _RUNNING:
        c, t = _RUNNING.pop()
        c.stop()
        t.join(LONG)


def _start(c: SessionController, request: RunRequest) -> tuple[threading.Thread, list[str]]:
    reasons: list[str] = []
    t = threading.Thread(target=lambda: reasons.append(c.run(request)), daemon=True)
    t.start()
    _RUNNING.append((c, t))
    return t, reasons


def _reference_frames(path: Path, interval: float, n: int) -> list[np.ndarray]:
    """What the file shows at ticks 1…n, decoded deterministically (no clock at all)."""
    src = VideoFileSource(path, realtime=False)
    with src:
        return [f.image for _, f in zip(range(n), src.sample(interval), strict=False)]


def test_session_flow_start_question_pause_feedback_stop(tiny_backend, vtest_avi, tmp_path) -> None:
    c, rec = _controller(tiny_backend, lambda r: VideoFileSource(r.source, realtime=True), tmp_path)
    cfg = SessionConfig(interval=0.3, frames_per_turn=1, talkativeness=50, max_new_tokens=6)
    t, reasons = _start(c, RunRequest(source=str(vtest_avi), model="tiny", config=cfg))
    _wait(lambda: len(rec.steps()) >= 2)
    assert c.state == State.RUNNING
    assert c.ask("What is moving?")
    _wait(lambda: any(s.question == "What is moving?" for s in rec.steps()))
    reply = next(s for s in rec.steps() if not s.silent)  # talkativeness +50: the tiny model speaks
    assert c.add_feedback(reply.turn, "wrong") and not c.add_feedback(10_000, "wrong")

    at_pause = len(rec.steps())
    assert c.pause() and c.state == State.PAUSED
    time.sleep(1.7)  # almost six intervals
    # The step already inside the model when the pause came may still finish (however slow the machine); no other.
    assert len(rec.steps()) <= at_pause + 1, "no step starts while paused"
    held = len(rec.steps())
    assert c.resume()
    _wait(lambda: len(rec.steps()) > held + 1)  # +1: not the late step of before the pause
    c.stop()
    t.join(LONG)
    assert reasons == ["stopped"] and c.state == State.IDLE
    states = [e.state for e in rec.of(StateChanged)]
    assert states == [State.LOADING, State.RUNNING, State.PAUSED, State.RUNNING, State.STOPPING, State.IDLE]
    assert rec.of(Finished) == [Finished(EndReason.STOPPED)] and type(rec.of(Finished)[0].reason) is EndReason
    assert type(reasons[0]) is EndReason and f"{reasons[0]}" == "stopped"  # a message names its value

    saved = load_session(next((tmp_path / "sessions").iterdir()))
    assert saved.ended == "stopped"
    assert [q["text"] for q in saved.questions] == ["What is moving?"]
    assert saved.feedback == {reply.turn: {"wrong"}}
    assert len(saved.steps) == len(rec.steps()) and not saved.gaps  # a file's pause is no gap
    assert saved.meta["interval"] == 0.3 and saved.meta["device"]


@pytest.mark.parametrize("frames_per_turn", [2])
def test_pausing_a_video_file_stops_its_clock_too(tiny_backend, vtest_avi, frames_per_turn) -> None:
    """Issue 13.1: pause 3 s, resume: the next frames continue from the same video time."""
    interval, pause_s = 0.4, 3.0
    c, rec = _controller(tiny_backend, lambda r: VideoFileSource(r.source, realtime=True))
    cfg = SessionConfig(interval=interval, frames_per_turn=frames_per_turn, talkativeness=-50, max_new_tokens=4)
    walls: list[tuple[float, object]] = []  # (wall clock, frame) as each frame is handed out

    def listen(event: object) -> None:
        rec(event)
        if isinstance(event, FrameSampled):
            walls.append((time.monotonic(), event.frame))

    c.listener = listen
    t, reasons = _start(c, RunRequest(source=str(vtest_avi), model="tiny", config=cfg))
    # Pause in the middle of a turn: one frame collected, the next one not yet due.
    _wait(lambda: len(rec.of(FrameSampled)) >= 3)
    assert c.pause()
    paused_frames = len(rec.of(FrameSampled))
    time.sleep(pause_s)
    assert len(rec.of(FrameSampled)) <= paused_frames + 1  # at most the tick already claimed
    c.resume()
    _wait(lambda: len(rec.steps()) >= 5)
    c.stop()
    t.join(LONG)
    assert reasons == ["stopped"]

    steps = rec.steps()
    frames = [f for s in steps for f in s.frames]
    times = [f.time for f in frames]
    # Ticks follow each other (a slow step may skip a tick, counted in `dropped`) and never by the pause.
    for a, b in zip(frames, frames[1:], strict=False):
        assert b.index == a.index + 1 + b.dropped
    # The video clock stood still during the pause: the film advanced by the wall time minus the pause.
    # (Without the hold, a resumed clock jumps to "now" and film time ≈ wall time.)
    (w0, f0), (w1, f1) = walls[0], walls[-1]
    # 1 s of slack for listener delays on a loaded machine; a leaked pause adds all 3 s.
    assert f1.time - f0.time <= (w1 - w0) - pause_s + 1.0, f"the pause leaked into the video clock: {times}"
    after_pause = frames[paused_frames] if len(frames) > paused_frames else frames[-1]
    assert after_pause.dropped * interval < pause_s / 2, times  # a slow step may skip a tick, the pause none
    # Each frame is the picture the file shows at its time stamp (decoded without any clock).
    ref = _reference_frames(vtest_avi, interval, frames[-1].index)
    for f in frames:
        assert np.array_equal(f.image, ref[f.index - 1]), f"frame stamped {f.time} s shows another moment"
    for s in steps:
        assert len(s.frames) == frames_per_turn
        span = s.frames[-1].time - s.frames[0].time
        assert span <= interval * (frames_per_turn - 1 + sum(f.dropped for f in s.frames[1:])) + 1e-9
    assert not rec.of(Gap)


class _LiveFeed(FrameSource):
    """A live feed like a camera: a video file played in real time whose clock cannot be held."""

    live = True

    def __init__(self, path: str) -> None:
        self.inner = VideoFileSource(path, realtime=True)
        self.name = "live-feed"

    def open(self) -> None:
        self.inner.open()

    def sample(self, interval: float):
        return self.inner.sample(interval)

    def close(self) -> None:
        self.inner.close()

    def pause(self) -> bool:
        return False  # the world goes on


def test_pausing_a_live_source_is_an_explicit_gap_and_no_turn_spans_it(tiny_backend, vtest_avi, tmp_path) -> None:
    interval, pause_s = 0.3, 1.5
    c, rec = _controller(tiny_backend, lambda r: _LiveFeed(r.source), tmp_path)
    paused = threading.Event()

    def pause_mid_turn(event: object) -> None:  # on the loop thread, right after a turn's first frame
        rec(event)
        if isinstance(event, FrameSampled) and len(rec.of(FrameSampled)) == 3 and not paused.is_set():
            paused.set()
            c.pause()
            threading.Timer(pause_s, c.resume).start()

    c.listener = pause_mid_turn
    cfg = SessionConfig(interval=interval, frames_per_turn=2, talkativeness=-50, max_new_tokens=4)
    t, reasons = _start(c, RunRequest(source=str(vtest_avi), model="tiny", config=cfg))
    _wait(lambda: len(rec.steps()) >= 4)
    c.stop()
    t.join(LONG)
    assert reasons == ["stopped"]

    gaps = rec.of(Gap)
    assert len(gaps) == 1 and gaps[0].frames_dropped == 1 and gaps[0].seconds >= pause_s - 0.1
    for s in rec.steps():  # both frames of a turn from one moment: at most a slow step's skip apart
        a, b = s.frames
        assert b.time - a.time < pause_s, f"turn {s.turn} holds frames from {a.time} s and {b.time} s"
    saved = load_session(next((tmp_path / "sessions").iterdir()))
    assert len(saved.gaps) == 1 and saved.gaps[0]["seconds"] >= pause_s - 0.1


def test_a_lost_camera_is_a_typed_health_event(tiny_backend) -> None:
    cam = FakeWebcam()
    c, rec = _controller(tiny_backend, lambda r: CameraSource(0, opener=cam.open, retry_delays=(0.01, 0.02)))
    cfg = SessionConfig(interval=0.1, frames_per_turn=1, talkativeness=-50, max_new_tokens=4)
    t, reasons = _start(c, RunRequest(source="camera", model="tiny", config=cfg))
    _wait(lambda: len(rec.steps()) >= 2)
    cam.plugged.clear()
    _wait(lambda: c.check_health() == SourceHealth.LOST)  # the GUI polls like this
    c.check_health()  # reported once, not on every poll
    cam.plugged.set()
    _wait(lambda: c.check_health() == SourceHealth.OK)
    c.stop()
    t.join(LONG)
    changes = [(e.health, e.source_name) for e in rec.of(HealthChanged)]
    assert changes == [(SourceHealth.LOST, "camera:0"), (SourceHealth.OK, "camera:0")]
    assert reasons == ["stopped"]


def test_a_model_that_cannot_load_fails_cleanly_and_the_next_start_works(tiny_model, tree_avi, tmp_path) -> None:
    rec = Recorder()
    c = SessionController(listener=rec)
    bad = RunRequest(source=str(tree_avi), model=str(tmp_path / "nope.gguf"), realtime=False)
    assert c.run(bad) == "error"
    assert "could not be loaded" in rec.of(Failed)[0].message and "nope.gguf" in rec.of(Failed)[0].message
    assert c.state == State.IDLE
    good = RunRequest(source=str(tree_avi), model=str(tiny_model.model), realtime=False,
                      config=SessionConfig(interval=0.5, frames_per_turn=1, max_turns=3, max_new_tokens=4),
                      backend=BackendSettings(n_ctx=2048))
    assert c.run(good) == "max turns"
    assert [s.turn for s in rec.steps()] == [0, 1, 2]
    c.release_backend()
    assert c.backend is None


def test_the_backend_is_never_freed_while_a_session_uses_it(tiny_model, vtest_avi) -> None:
    closed = threading.Event()

    def factory(r: RunRequest):
        backend = make_backend(str(tiny_model.model), None, BackendSettings(n_ctx=2048))
        real_close = backend.close

        def close() -> None:
            closed.set()
            real_close()

        backend.close = close  # type: ignore[method-assign]
        return backend

    rec = Recorder()
    c = SessionController(factory, lambda r: VideoFileSource(r.source, realtime=True), listener=rec)
    cfg = SessionConfig(interval=0.2, frames_per_turn=1, talkativeness=-50, max_new_tokens=4)
    t, _ = _start(c, RunRequest(source=str(vtest_avi), model="tiny", config=cfg))
    _wait(lambda: len(rec.steps()) >= 1)
    c.release_backend()  # e.g. the window closes while a step decodes
    n = len(rec.steps())
    _wait(lambda: len(rec.steps()) >= n + 2)  # the session goes on with its model
    assert not closed.is_set()
    c.stop()
    t.join(LONG)
    assert closed.is_set() and c.backend is None


class _LateAfterPause(_LiveFeed):
    """A live feed whose first frame after a pause comes ``delay`` seconds after the resume (a slow camera)."""

    def __init__(self, path: str, resumed: threading.Event, delay: float) -> None:
        super().__init__(path)
        self.resumed, self.delay, self.was_paused = resumed, delay, False

    def sample(self, interval: float):
        for f in self.inner.sample(interval):
            if self.was_paused:
                self.was_paused = False
                assert self.resumed.wait(LONG)
                time.sleep(self.delay)
            yield f

    def pause(self) -> bool:
        self.was_paused = True
        return False


def test_a_live_gap_lasts_from_pause_to_resume_not_to_the_next_frame(tiny_backend, vtest_avi) -> None:
    """The gap is the time the user paused: measured to ``resume()``, not to the next frame, which a slow
    source delivers later. Bounds from the test's own clock readings around the calls, no timing guess."""
    resumed = threading.Event()
    c, rec = _controller(tiny_backend, lambda r: _LateAfterPause(r.source, resumed, delay=1.0))
    clock: dict[str, float] = {}

    def resume_later() -> None:
        time.sleep(0.3)
        clock["before_resume"] = time.monotonic()
        assert c.resume()
        clock["after_resume"] = time.monotonic()
        resumed.set()

    def pause_once(event: object) -> None:
        rec(event)
        if isinstance(event, FrameSampled) and len(rec.of(FrameSampled)) == 3 and "before_pause" not in clock:
            clock["before_pause"] = time.monotonic()
            assert c.pause()
            clock["after_pause"] = time.monotonic()
            threading.Thread(target=resume_later, daemon=True).start()

    c.listener = pause_once
    cfg = SessionConfig(interval=0.3, frames_per_turn=2, talkativeness=-50, max_new_tokens=4)
    t, reasons = _start(c, RunRequest(source=str(vtest_avi), model="tiny", config=cfg))
    _wait(lambda: len(rec.of(Gap)) == 1 and len(rec.steps()) >= 3)
    c.stop()
    t.join(LONG)
    (gap,) = rec.of(Gap)
    assert clock["before_resume"] - clock["after_pause"] <= gap.seconds, gap
    assert gap.seconds <= clock["after_resume"] - clock["before_pause"], \
        f"the gap ({gap.seconds:.2f} s) ran past the resume: measured to the next frame, 1 s later"


def test_the_frame_tap_holds_drops_and_stops_through_what_it_is_given(vtest_avi) -> None:
    """FrameTap reads nothing of the controller: a stale frame (hold says so) is dropped, every frame let
    through is reported in order, a stop ends the stream, and health is checked per frame and at a file's end."""
    from app.engine.frame_tap import FrameTap

    passed: list[float] = []
    health: list[int] = []
    holds = iter([True, False, False, False, False])  # the first frame predates a (live) pause
    stop_after = 3
    tap = FrameTap(VideoFileSource(str(vtest_avi), realtime=False), stopping=lambda: len(passed) >= stop_after,
                   hold=lambda: next(holds), check_health=lambda: health.append(len(passed)), passed=lambda f: passed.append(f.time))
    with tap:
        got = [f.time for f in tap.sample(0.5)]
    assert got == passed and len(got) == stop_after and got[0] > 0.0  # frame 0 dropped: never reaches the model
    assert got == sorted(got) and health == [0, 1, 2]  # a stop is no health news: no check after it

    ended: list[int] = []
    tap = FrameTap(VideoFileSource(str(vtest_avi), realtime=False), stopping=lambda: False, hold=lambda: False,
                   check_health=lambda: ended.append(1), passed=lambda f: None)
    with tap:
        n = sum(1 for _ in tap.sample(60.0))
    assert len(ended) == n + 1  # each frame, then once more when the file ends by itself


def test_stop_while_paused_wins_and_every_state_change_is_said_once(tiny_backend, vtest_avi) -> None:
    """The state is the one truth (no flags beside it): a stop during a pause ends the session, a pause or
    resume after the stop is refused, and a second run cannot start until the first is back to idle."""
    c, rec = _controller(tiny_backend, lambda r: VideoFileSource(r.source, realtime=True))
    cfg = SessionConfig(interval=0.3, frames_per_turn=1, max_new_tokens=4)
    request = RunRequest(source=str(vtest_avi), model="tiny", config=cfg)
    t, reasons = _start(c, request)
    _wait(lambda: len(rec.steps()) >= 1)
    assert c.pause() and c.state == State.PAUSED
    assert not c.reserve()  # a session is on: a second Start is refused
    c.stop()
    assert c.state in (State.STOPPING, State.IDLE)
    assert not c.pause() and not c.resume()  # stopping is final
    t.join(LONG)
    assert reasons == [EndReason.STOPPED] and c.state == State.IDLE
    assert [e.state for e in rec.of(StateChanged)] == [State.LOADING, State.RUNNING, State.PAUSED, State.STOPPING,
                                                       State.IDLE]
    assert c.reserve() and c.state == State.LOADING  # idle again: the next Start claims it
    c.stop()  # a reserved session stopped before it ran: back to idle when run() sees it
    assert c.run(request) == EndReason.STOPPED and c.state == State.IDLE


def test_prepare_checks_the_source_before_the_model_and_run_starts_from_what_it_prepared(tiny_backend, tiny_model,
                                                                                         vtest_avi, tmp_path) -> None:
    """duet run and the GUI start the same way: prepare() opens the source (a bad one fails before the slow part,
    with no model loaded), loads the model, and run() takes both as they are, opening nothing twice."""
    from app.capture.base import CaptureError

    loads: list[str] = []

    def factory(r: RunRequest):
        loads.append(r.model)
        return tiny_backend

    c = SessionController(factory)  # the controller's own source building, as duet run uses it
    with pytest.raises(CaptureError):
        c.prepare(RunRequest(source=str(tmp_path / "missing.avi"), model="tiny"))
    assert loads == []
    opened: list[VideoFileSource] = []

    def source(r: RunRequest):
        s = VideoFileSource(r.source, realtime=False)
        opened.append(s)
        return s

    c = SessionController(factory, source)
    request = RunRequest(source=str(vtest_avi), model="tiny",
                         config=SessionConfig(interval=0.5, frames_per_turn=1, max_turns=2, max_new_tokens=4))
    assert c.prepare(request) is tiny_backend and c.state == State.IDLE
    assert c.run(request) == EndReason.MAX_TURNS
    assert len(opened) == 1 and loads == ["tiny"]  # the prepared source and model, nothing built again
    own = make_backend(str(tiny_model.model), str(tiny_model.mmproj), BackendSettings(n_ctx=4096))
    c = SessionController(lambda _r: own, source)  # its own model: release closes it
    c.prepare(request)  # prepared, then given up: release frees the model and the source it opened
    c.release_backend()
    assert len(opened) == 2 and c.backend is None and opened[-1]._closed
