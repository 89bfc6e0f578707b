"""What every `duet train` job process does around its stage (app/trainer/cli_worker.py): --set overrides, and a
single process's reporter and exit status (a torchrun worker's are tests/trainer/test_distributed.py's)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from app.trainer.cli_worker import parse_overrides, worker_context, worker_exit, worker_reporter
from app.trainer.config import DEFAULT_DEMO_RECIPE, load_config
from app.trainer.distributed import EXIT_FILE
from app.trainer.jobs import EXIT_CANCELLED, EXIT_FAILED


def test_set_values_are_toml_and_anything_else_stays_a_string() -> None:
    got = parse_overrides(["sft.steps=20", "sft.lr = 3e-4", 'data.train_synthetic.families=["appear"]',
                           "model.dtype=bfloat16", "data.heldout_synthetic=false"])
    assert got == {"sft.steps": 20, "sft.lr": 3e-4, "data.train_synthetic.families": ["appear"],
                   "model.dtype": "bfloat16", "data.heldout_synthetic": False}
    assert load_config(DEFAULT_DEMO_RECIPE, got).sft.steps == 20  # the shape load_config takes


def test_a_set_without_a_value_is_named() -> None:
    with pytest.raises(SystemExit, match="--set 'sft.steps': expected KEY=VALUE"):
        parse_overrides(["sft.steps"])


def test_one_process_reports_to_stdout_and_the_log_and_exits_with_the_jobs_code(tmp_path: Path) -> None:
    ctx = worker_context("cpu")
    assert not ctx.enabled and ctx.is_main
    out = io.StringIO()
    worker_reporter(ctx, out, tmp_path, quiet=False).emit("step", stage="sft", step=1)
    worker_reporter(ctx, out, tmp_path, quiet=True).emit("step", stage="sft", step=2)  # quiet: the log only
    assert [json.loads(line)["step"] for line in out.getvalue().splitlines()] == [1]
    assert [json.loads(line)["step"] for line in (tmp_path / "progress.jsonl").read_text().splitlines()] == [1, 2]
    assert worker_exit(ctx, tmp_path, EXIT_CANCELLED) == EXIT_CANCELLED  # no launcher to tell: the code itself
    assert worker_exit(ctx, tmp_path, EXIT_FAILED) == EXIT_FAILED
    assert not (tmp_path / EXIT_FILE).exists()
