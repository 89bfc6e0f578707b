"""`duet train feedback`'s command (app/trainer/cli_feedback.py): its flags in their own help group, and the
job.json a run started from a terminal leaves for the Train page. Its refusals are tests/trainer/test_feedback_job.py's,
its runs tests/trainer/test_feedback_learning.py's and test_distributed.py's."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

from app.trainer import cli, cli_feedback


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duet")
    cli.add_commands(parser.add_subparsers(dest="command"))
    return parser


def test_the_feedback_flags_and_their_defaults() -> None:
    args = _parser().parse_args(["train", "feedback", "--base", "demo", "--name", "mine", "--all"])
    assert (args.base, args.name, args.all, args.sessions) == ("demo", "mine", True, None)
    assert (args.steps, args.max_steps, args.max_minutes, args.grpo_steps) == (40, None, 0.0, 0)
    assert (args.replay, args.synthetic, args.lr, args.parity) == ([], False, None, False)
    args = _parser().parse_args(["train", "feedback", "--replay", "a.jsonl", "--replay", "b.json", "--steps", "5"])
    assert args.replay == ["a.jsonl", "b.json"] and args.steps == 5


def test_the_feedback_flags_have_their_own_help_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    group = text[text.index("feedback (duet train feedback):"):]
    for flag in ("--base", "--name", "--sessions", "--all", "--steps", "--max-steps", "--max-minutes", "--replay",
                 "--synthetic", "--grpo-steps", "--lr", "--parity"):
        assert f"  {flag}" in group, flag


def test_a_run_from_a_terminal_records_how_to_resume_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["duet", "train", "feedback", "--base", "demo", "--name", "mine", "--all"])
    cli_feedback.record_job(tmp_path)
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["pid"] == os.getpid()
    assert job["argv"] == [sys.executable, "-m", "app.trainer.cli", "feedback", "--base", "demo", "--name", "mine",
                           "--all"]


def test_a_run_called_in_process_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest", "tests"])
    cli_feedback.record_job(tmp_path)
    assert not (tmp_path / "job.json").exists()
