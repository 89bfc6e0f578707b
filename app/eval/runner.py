"""Running the engine over a dataset, then scoring and reporting: the body of ``duet eval``.

Evaluation mode means: a non-live video source (every tick, no skipping, same frames on every run),
greedy decoding in the backend, questions queued with ``session.ask(text, at=time)`` so they ride in
the first user turn whose video time reaches them, and a fresh dialogue per example (as the
reference driver does per ``question_id``).

Several backends (``duet eval --remote URL1,URL2``: one OpenAI-compatible server each) split the dataset:
one worker thread per backend takes the next unfinished example from a shared queue, so a faster server
simply does more of them. Each example is a fresh dialogue on one backend, and a server answers each
request from the whole dialogue it is sent, so which server ran a video changes nothing in its
prediction: the PAUC is the single-backend one. A server that stops answering mid-run hands the example
it was on back to the queue and leaves the run (the last one left keeps going and records failures, as
a single backend does).

Output folder layout (everything a rerun needs to resume is on disk)::

    run.json            settings of this run; a resume with different settings is refused
    predictions.jsonl   one line per finished example (appended, fsynced)
    judge_cache.sqlite  every verdict, keyed by judge + request
    scores.jsonl        one line per gold turn
    report.json / report.md / timelines/*.png
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from app.capture.base import CaptureError, FrameSource
from app.core.atomic import write_json_atomic
from app.core.errors import InputError
from app.core.timefmt import clock
from app.engine.backend import Backend, BackendError
from app.engine.session import ProactiveSession
from app.eval.dataset import Dataset, Example, load_dataset
from app.eval.judges import Judge, JudgeCache
from app.eval.pauc import OMEGAS
from app.eval.predictions import Prediction, append_prediction, read_predictions
from app.eval.results import EvalResult, RunSettings
from app.eval.scoring import score_dataset

log = logging.getLogger("duet.eval")

BackendFactory = Callable[[], Backend]
SourceFactory = Callable[[Path], FrameSource]
Progress = Callable[[str], None]


class RunMismatch(InputError):
    """The output folder holds a run made with other settings; resuming would mix two runs."""


class _Stopped(Exception):
    """The run is stopping (Ctrl-C in a split run): the example in progress is left unfinished, unwritten."""


def video_source(path: Path) -> FrameSource:
    """The evaluation source: a video file read tick by tick, never paced by the wall clock."""
    from app.capture.video import VideoFileSource

    return VideoFileSource(path, realtime=False)


def predict_example(ex: Example, backend: Backend, settings: RunSettings,
                    source_factory: SourceFactory = video_source,
                    stop: threading.Event | None = None) -> Prediction:
    """Run one example's video through a fresh dialogue and collect the replies.

    A capture or backend failure ends the example early; the replies so far are kept and the
    error is recorded, so it is reported (and retried on resume) rather than lost. ``stop`` set ends
    it between two steps with :class:`_Stopped` (nothing to record: it is redone on resume).
    """
    if ex.video_path is None:
        raise ValueError(f"example {ex.id!r} has no resolved video path")
    session = ProactiveSession(backend, settings.session_config())
    for q in ex.questions:
        session.ask(q.text, at=q.time)
    replies: list[tuple[float, str]] = []
    asked: list[dict[str, Any]] = []
    n_turns = 0
    model_ms = 0.0
    error = None
    t0 = time.perf_counter()
    try:
        with source_factory(ex.video_path) as source:
            for step in session.run(source):
                if stop is not None and stop.is_set():
                    raise _Stopped
                n_turns += 1
                model_ms += step.timings.total_ms
                if step.question:
                    asked.append({"time": step.video_time, "text": step.question})
                if not step.silent:
                    replies.append((round(step.video_time, 3), step.text.strip()))
    except (CaptureError, BackendError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
        log.warning("example %s stopped early: %s", ex.id, error)
        backend_failed = isinstance(e, BackendError)
    else:
        backend_failed = False
    meta: dict[str, Any] = {"asked": asked, "video_time": round(session.video_time, 3),
                            "model_ms": round(model_ms, 1), "wall_s": round(time.perf_counter() - t0, 3)}
    if backend_failed:
        meta["backend_failed"] = True  # the model (a server) failed, not the video: see _Split.retire
    if n_turns == 0 and error is None:
        error = "the video yielded no complete turn (shorter than frames_per_turn × interval?)"
    if n_turns:
        beyond = beyond_end_warning(ex, session.video_time, settings.interval)
        if beyond:
            log.warning("%s", beyond)
            meta["warnings"] = [beyond]
    return Prediction(ex.id, replies, n_turns, error, meta)


def beyond_end_warning(ex: Example, end: float, interval: float) -> str | None:
    """Gold spans or questions after the last frame watched cannot be met: most likely a wrong
    ``duration``/timestamps or the wrong video, so say so rather than score them silently."""
    late_a = [a for a in ex.answers if a.reply_span[0] > end + interval]
    late_q = [q for q in ex.questions if q.time > end + interval]
    if not late_a and not late_q:
        return None
    return (f"example {ex.id}: {len(late_a)} gold answer span(s) and {len(late_q)} question(s) start after the "
            f"video ends ({end:.1f} s watched); they cannot be met — wrong timestamps or the wrong video?")


def predict_dataset(
    dataset: Dataset,
    backend_factory: BackendFactory | Sequence[BackendFactory],
    predictions_path: Path,
    settings: RunSettings,
    source_factory: SourceFactory = video_source,
    progress: Progress | None = None,
    *,
    labels: Sequence[str] | None = None,
    status: Progress | None = None,
) -> dict[str, Prediction]:
    """Predict every example not already finished in ``predictions_path``; returns all predictions.

    Examples whose earlier attempt ended in an error are retried. A backend is created only if
    something is left to run, so resuming a finished run never loads the model. Several factories
    split the examples between them (module docstring); ``labels`` name them in the progress lines and
    in each prediction's ``meta["backend"]``. ``status`` gets the per-example progress line (with the
    estimated time left), ``progress`` everything else (warnings, a server leaving); without ``status``
    both go to ``progress``.
    """
    factories = [backend_factory] if callable(backend_factory) else list(backend_factory)
    if not factories:
        raise ValueError("no backend to predict with")
    names = list(labels) if labels is not None else [""] * len(factories)
    done = read_predictions(predictions_path)
    todo = [ex for ex in dataset if ex.id not in done or done[ex.id].error]
    if not todo:
        return done
    split = _Split(todo, done, predictions_path, progress, status or progress, len(factories))
    if len(factories) == 1:  # in this thread: an interrupt (Ctrl-C) stops it where it is
        split.work(names[0], factories[0], settings, source_factory)
        return done
    threads = [threading.Thread(target=split.work, args=(name, factory, settings, source_factory),
                                name=f"eval-{name or k}", daemon=True)
               for k, (name, factory) in enumerate(zip(names, factories))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # in short waits, so Ctrl-C reaches this thread
    except BaseException:
        # The workers stop at their next step, leaving their example unwritten (what is written stays), and
        # close their videos and backends themselves: a process that exits while a thread is inside OpenCV
        # can abort. A second Ctrl-C here ends the wait at once.
        split.stop.set()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        raise
    if split.failure is not None:
        raise split.failure
    return done


class _Split:
    """The examples left, shared by the workers (one per backend), and what they report.

    Everything a worker changes (the queue, the predictions file and dict, the counts) is changed under
    one lock, so lines are appended whole and one at a time, and the progress line counts right.
    """

    def __init__(self, todo: list[Example], done: dict[str, Prediction], path: Path,
                 progress: Progress | None, status: Progress | None, workers: int) -> None:
        self.queue: deque[Example] = deque(todo)
        self.done, self.path = done, path
        self.progress, self.status = progress, status
        self.total, self.finished, self.active = len(todo), 0, workers
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.t0 = time.perf_counter()

    def take(self) -> Example | None:
        with self.lock:
            return None if self.stop.is_set() or not self.queue else self.queue.popleft()

    def work(self, name: str, factory: BackendFactory, settings: RunSettings,
             source_factory: SourceFactory) -> None:
        """Take examples until none is left (or the run stops); the backend is made at the first one."""
        backend: Backend | None = None
        try:
            while (ex := self.take()) is not None:
                if backend is None:
                    backend = factory()
                try:
                    pred = predict_example(ex, backend, settings, source_factory, self.stop)
                except _Stopped:
                    return
                if name:
                    pred.meta["backend"] = name
                if pred.meta.get("backend_failed") and self.retire(name, ex, backend, pred):
                    return
                self.record(name, ex, pred)
        except BaseException as e:  # a bug or an interrupt in a worker thread ends the whole run
            with self.lock:
                self.failure = self.failure or e
            self.stop.set()
            if threading.current_thread() is threading.main_thread():
                raise
        finally:
            if backend is not None:
                backend.close()

    def retire(self, name: str, ex: Example, backend: Backend, pred: Prediction) -> bool:
        """After a backend failure: if the server is down and others are still working, give the example back
        and leave the run (True). The last one left, or a server that still answers (the failure was this
        example's), records the failure as a single backend would (False)."""
        reachable = getattr(backend, "served_models", None)
        if reachable is not None:
            try:
                reachable(retries=0)
                return False  # it answers: the failure belongs to the example
            except BackendError:
                pass
        with self.lock:
            if self.active <= 1:
                return False
            self.active -= 1
            self.queue.appendleft(ex)
        if self.progress:
            self.progress(f"{name or 'a backend'} stopped answering ({pred.error}); the other "
                          f"{self.active} take its videos, {ex.id} included")
        return True

    def record(self, name: str, ex: Example, pred: Prediction) -> None:
        with self.lock:
            append_prediction(self.path, pred)
            self.done[ex.id] = pred
            self.finished += 1
            k = self.finished
            elapsed = time.perf_counter() - self.t0
        left = self.total - k
        eta = f" · {elapsed / k:.1f} s a video · ETA {clock(elapsed / k * left)}" if left else \
            f" · done in {clock(elapsed)}"
        outcome = f"error: {pred.error}" if pred.error else f"{len(pred.replies)} replies"
        where = f" ({name})" if name else ""
        if self.status:
            self.status(f"[{k}/{self.total}] {ex.id}{where}: {pred.n_turns} turns, {outcome}{eta}")
        if self.progress:
            for w in pred.meta.get("warnings", []):
                self.progress(f"warning: {w}")


def _check_run_record(path: Path, record: dict[str, Any], restart: bool) -> None:
    import json

    if path.is_file() and not restart:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old.get("run") != record["run"]:
            raise RunMismatch(
                f"{path.parent} holds a run with other settings ({old.get('run')} vs {record['run']}); "
                "use another --out folder or --restart to discard it")
    write_json_atomic(path, record)


def run_eval(
    dataset_path: str | Path,
    out_dir: str | Path,
    backend_factory: BackendFactory | Sequence[BackendFactory] | None,
    judge: Judge,
    *,
    settings: RunSettings | None = None,
    backend_labels: Sequence[str] | None = None,
    status: Progress | None = None,
    video_root: str | Path | None = None,
    source_factory: SourceFactory = video_source,
    judge_workers: int = 1,
    restart: bool = False,
    skip_missing: bool = False,
    timelines: bool = True,
    progress: Progress | None = None,
) -> EvalResult:
    """Predict (resumable), judge (cached), score and write the report files.

    ``backend_factory=None`` scores the predictions already in ``out_dir`` without running a
    model (e.g. to rescore with another judge); examples without a prediction then count as silent.
    Several factories split the dataset between them (:func:`predict_dataset`).
    """
    from app.eval.report import write_report

    settings = settings or RunSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(dataset_path, video_root)
    preds_path = out / "predictions.jsonl"
    if restart:
        for name in ("predictions.jsonl", "scores.jsonl", "report.json", "report.md"):
            (out / name).unlink(missing_ok=True)
    skipped: dict[str, str] = {}
    if backend_factory is not None:
        missing = dataset.missing_videos()
        if missing and not skip_missing:
            dataset.check_videos()  # raises, naming every record
        skipped = {e.id: f"video not found: {e.video_path}" for e in missing}
        if skipped:
            dataset = replace(dataset, examples=[e for e in dataset if e.id not in skipped])
        record = {"dataset": str(dataset.path), "run": asdict(settings)}
        _check_run_record(out / "run.json", record, restart)
        preds = predict_dataset(dataset, backend_factory, preds_path, settings, source_factory, progress,
                                labels=backend_labels, status=status)
    else:
        preds = read_predictions(preds_path)
    ids = {e.id for e in dataset}
    preds = {k: v for k, v in preds.items() if k in ids}
    cache = JudgeCache(out / "judge_cache.sqlite")
    try:
        scores = score_dataset(dataset, preds, judge, cache, judge_workers, OMEGAS)
    finally:
        cache.close()
    result = EvalResult(out, dataset, preds, scores, skipped)
    result.files = write_report(result, judge_id=judge.id, settings=settings, timelines=timelines)
    return result
