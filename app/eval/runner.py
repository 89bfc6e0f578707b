"""Running the engine over a dataset, then scoring and reporting: the body of ``duet eval``.

Evaluation mode means: a non-live video source (every tick, no skipping, same frames on every run),
greedy decoding in the backend, questions queued with ``session.ask(text, at=time)`` so they ride in
the first user turn whose video time reaches them, and a fresh dialogue per example (as the
reference driver does per ``question_id``).

Output folder layout (everything a rerun needs to resume is on disk)::

    run.json            settings of this run; a resume with different settings is refused
    predictions.jsonl   one line per finished example (appended, fsynced)
    judge_cache.sqlite  every verdict, keyed by judge + request
    scores.jsonl        one line per gold turn
    report.json / report.md / timelines/*.png
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from app.capture.base import CaptureError, FrameSource
from app.core.atomic import write_json_atomic
from app.core.errors import InputError
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


def video_source(path: Path) -> FrameSource:
    """The evaluation source: a video file read tick by tick, never paced by the wall clock."""
    from app.capture.video import VideoFileSource

    return VideoFileSource(path, realtime=False)


def predict_example(ex: Example, backend: Backend, settings: RunSettings,
                    source_factory: SourceFactory = video_source) -> Prediction:
    """Run one example's video through a fresh dialogue and collect the replies.

    A capture or backend failure ends the example early; the replies so far are kept and the
    error is recorded, so it is reported (and retried on resume) rather than lost.
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
                n_turns += 1
                model_ms += step.timings.total_ms
                if step.question:
                    asked.append({"time": step.video_time, "text": step.question})
                if not step.silent:
                    replies.append((round(step.video_time, 3), step.text.strip()))
    except (CaptureError, BackendError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
        log.warning("example %s stopped early: %s", ex.id, error)
    meta = {"asked": asked, "video_time": round(session.video_time, 3), "model_ms": round(model_ms, 1),
            "wall_s": round(time.perf_counter() - t0, 3)}
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
    backend_factory: BackendFactory,
    predictions_path: Path,
    settings: RunSettings,
    source_factory: SourceFactory = video_source,
    progress: Progress | None = None,
) -> dict[str, Prediction]:
    """Predict every example not already finished in ``predictions_path``; returns all predictions.

    Examples whose earlier attempt ended in an error are retried. The backend is created only if
    something is left to run, so resuming a finished run never loads the model.
    """
    done = read_predictions(predictions_path)
    todo = [ex for ex in dataset if ex.id not in done or done[ex.id].error]
    if not todo:
        return done
    backend = backend_factory()
    try:
        for i, ex in enumerate(todo, 1):
            pred = predict_example(ex, backend, settings, source_factory)
            append_prediction(predictions_path, pred)
            done[ex.id] = pred
            if progress:
                status = f"error: {pred.error}" if pred.error else f"{len(pred.replies)} replies"
                progress(f"[{i}/{len(todo)}] {ex.id}: {pred.n_turns} turns, {status}")
                for w in pred.meta.get("warnings", []):
                    progress(f"warning: {w}")
    finally:
        backend.close()
    return done


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
    backend_factory: BackendFactory | None,
    judge: Judge,
    *,
    settings: RunSettings | None = None,
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
        preds = predict_dataset(dataset, backend_factory, preds_path, settings, source_factory, progress)
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
