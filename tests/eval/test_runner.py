"""The runner over real synthetic video files with scripted backends that check every frame they get.

The backends here stand in for the model only: they receive the frames ProactiveSession feeds
from the real VideoFileSource, assert each is the synthetic video's picture at that video time, and
answer from the script (right, wrong or never). So these tests exercise the capture → session →
predictions → judge → report path for real and know what PAUC must come out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from app.engine.backend import BackendStep
from app.eval.cli import main
from app.eval.dataset import DatasetError
from app.eval.judges import ExactMatchJudge
from app.eval.runner import RunMismatch, RunSettings, run_eval
from app.eval.synthetic import SyntheticConfig, SyntheticVideo, generate, make_synthetic

CFG = SyntheticConfig(families=("appear", "colour", "text"), per_family=1, size=84)


class Scripted:
    """Answers each event at the first turn that sees it; mode 'right', 'wrong' or 'silent'."""

    name = "scripted"
    device = "test"

    def __init__(self, videos: Sequence[SyntheticVideo], mode: str = "right", interval: float = 1.0,
                 stop_after: int | None = None) -> None:
        self.videos, self.mode, self.interval, self.stop_after = list(videos), mode, interval, stop_after
        self.index = -1
        self.steps = 0
        self.closed = False
        self.questions: list[tuple[float, str]] = []

    def reset(self, system_prompt: str) -> None:
        self.index += 1
        self.t = 0.0
        self.said: set[float] = set()

    def step(self, images: Sequence[np.ndarray], text: str = "", **kw: object) -> BackendStep:
        if self.stop_after is not None and self.index >= self.stop_after:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of a run
        self.steps += 1
        video = self.videos[self.index]
        for k, img in enumerate(images):
            t = self.t + (k + 1) * self.interval
            want = video.frame_at(t)
            assert img.shape == want.shape, (video.id, t)
            err = float(np.abs(img.astype(int) - want.astype(int)).mean())
            assert err < 6.0, f"{video.id}: frame at t={t} is not the video's picture there (error {err:.1f})"
        self.t += len(images) * self.interval
        if text:
            self.questions.append((self.t, text))
        due = [e for e in video.events if e.time <= self.t and e.time not in self.said]
        if not due or self.mode == "silent":
            return BackendStep("NO REPLY", silent=True)
        self.said.update(e.time for e in due)
        answer = due[-1].answer
        if self.mode == "wrong":
            answer = "Nothing happened."
        return BackendStep(answer, silent=False)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_synthetic(out, CFG)
    return out


def run(synth: Path, out: Path, mode: str = "right", **kw):
    backend = Scripted(generate(CFG), mode)
    result = run_eval(synth, out, lambda: backend, ExactMatchJudge(), **kw)
    return result, backend


def test_a_perfect_model_scores_high_and_the_report_files_parse(synth: Path, tmp_path: Path) -> None:
    result, backend = run(synth, tmp_path)
    s = result.scores.summary
    assert backend.closed and backend.index == 2  # one fresh dialogue per example
    assert [q for _, q in backend.questions] == ["Tell me when a new shape appears.",
                                                 "Tell me when the shape changes colour.",
                                                 "Tell me when a word appears on the screen."]
    assert all(t == 2.0 for t, _ in backend.questions)  # asked at 0 s: rides in the first turn (t = 2 s)
    assert s.n_turns == result.dataset.n_turns and s.n_turns_no_reply == 0
    assert all(p.score == 2 for t in result.scores.turns for p in t.points)
    # every reply comes ≤ 1.5 s into a 3 s span (or 2.5 s span at the end), with the right answer
    assert s.pauc[0.5] > 0.85 and s.pauc[1.0] == pytest.approx(1.0)
    assert s.duplicate_proportion is None and s.out_of_span_replies == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["pauc"]["0.5"] == pytest.approx(s.pauc[0.5])
    assert report["judge"]["id"] == "exact-match:1" and report["judge"]["failed"] == 0
    md = (tmp_path / "report.md").read_text()
    assert "PAUC ω=0.5 (headline)" in md and "## By task" in md
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert len(lines) == s.n_turns and all(json.loads(x)["pauc"]["0.5"] > 0.5 for x in lines)
    for e in report["examples"]:
        png = tmp_path / e["timeline"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [p["question_id"] for p in preds] == [e.id for e in result.dataset]
    assert all(r["time"] % 2 == 0 for p in preds for r in p["model_response_list"])  # 2 frames a turn, 1 s apart


def test_silence_scores_a_quarter_and_wrong_answers_less(synth: Path, tmp_path: Path) -> None:
    silent = run(synth, tmp_path / "silent", "silent")[0].scores.summary
    assert silent.pauc == {0.0: 0.25, 0.5: 0.25, 1.0: 0.25} and silent.replies == 0
    wrong = run(synth, tmp_path / "wrong", "wrong")[0].scores.summary
    assert wrong.pauc[0.5] < 0.25 and wrong.pauc[1.0] == 0.0


def test_interrupted_run_resumes_where_it_stopped(synth: Path, tmp_path: Path) -> None:
    first = Scripted(generate(CFG), stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        run_eval(synth, tmp_path, lambda: first, ExactMatchJudge())
    assert first.closed
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 1
    second = Scripted(generate(CFG)[1:])  # only the two unfinished videos may be run
    resumed = run_eval(synth, tmp_path, lambda: second, ExactMatchJudge())
    assert second.index == 1 and len(resumed.predictions) == 3
    fresh = run(synth, tmp_path / "fresh")[0]
    assert resumed.scores.summary.pauc == fresh.scores.summary.pauc

    def no_model():
        raise AssertionError("a finished run must not load the model again")

    again = run_eval(synth, tmp_path, no_model, ExactMatchJudge())
    assert again.scores.outcome.judged == 0 and again.scores.outcome.cached > 0


def test_resume_with_other_settings_is_refused(synth: Path, tmp_path: Path) -> None:
    run(synth, tmp_path)
    with pytest.raises(RunMismatch, match="other settings"):
        run(synth, tmp_path, settings=RunSettings(interval=2.0))
    run(synth, tmp_path, settings=RunSettings(interval=1.0), restart=True)


def test_missing_and_broken_videos(synth: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "set"
    shutil.copytree(synth, copy)
    (copy / "videos" / "colour-easy-000.avi").unlink()
    with pytest.raises(DatasetError, match="record 'colour-easy-000': field 'video': file not found"):
        run(copy, tmp_path / "a")
    videos = [v for v in generate(CFG) if v.id != "colour-easy-000"]
    backend = Scripted(videos)
    res = run_eval(copy, tmp_path / "b", lambda: backend, ExactMatchJudge(), skip_missing=True)
    assert res.skipped == {"colour-easy-000": f"video not found: {copy / 'videos/colour-easy-000.avi'}"}
    assert res.scores.summary.n_examples == 2
    assert "colour-easy-000" in json.loads((tmp_path / "b/report.json").read_text())["skipped"]
    (copy / "videos" / "text-easy-000.avi").write_bytes(b"not a video at all")
    backend = Scripted(videos)
    res = run_eval(copy, tmp_path / "c", lambda: backend, ExactMatchJudge(), skip_missing=True)
    errors = res.scores.summary.examples_with_errors
    assert list(errors) == ["text-easy-000"] and "CaptureError" in errors["text-easy-000"]


def test_cli_rescoring_and_bad_input(synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(synth, tmp_path / "run")
    assert main([str(synth), "--score-only", "--out", str(tmp_path / "run"), "--judge", "overlap"]) == 0
    out = capsys.readouterr().out
    assert "PAUC ω=0/0.5/1:" in out and "overlap-f1" in out
    assert main([str(tmp_path / "nothing.jsonl"), "--model", "x"]) == 2
    assert main(["run", str(synth), "--score-only", "--judge", "llm"]) == 2  # no --judge-url
    assert "--judge-url" in capsys.readouterr().err
    assert main([str(synth)]) == 2  # no --model


def test_a_judge_that_is_down_marks_the_run_incomplete(synth: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.engine.loopback import refused_port

    run(synth, tmp_path)
    with refused_port() as port:  # bound, never listening, for the whole run: connections are refused
        argv = [str(synth), "--score-only", "--out", str(tmp_path), "--judge", "llm", "--judge-url",
                f"http://127.0.0.1:{port}/v1", "--judge-model", "m", "--judge-retries", "0"]
        assert main(argv) == 3
    assert "INCOMPLETE" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["judge"]["failed"] == report["summary"]["judge_failures"] > 0
    assert all("refused" in f.lower() for f in report["judge"]["failures"])
    assert "**Incomplete:**" in (tmp_path / "report.md").read_text()
