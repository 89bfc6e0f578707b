"""One source of settings: defaults, ranges and the messages a bad value gets, in the API and the CLIs."""

from __future__ import annotations

import math

import pytest

from app.cli import main as duet
from app.core.config import BackendSettings, SessionConfig, default, limit, resolve_threads, usable_cores
from app.core.errors import DuetError, InputError, SettingError


@pytest.mark.parametrize(("field", "value", "words"), [
    ("interval", 0.0, "0.1 to 60 s"),
    ("interval", math.nan, "0.1 to 60 s"),
    ("frames_per_turn", 5, "1 to 4"),
    ("frames_per_turn", 1.5, "whole number"),
    ("tokens_per_frame", 2, "4 to 1024"),
    ("talkativeness", math.inf, "-50 to 50"),
    ("max_new_tokens", 0, "1 to 1024"),
    ("max_turns", -1, "0 to 1000000000"),
    ("interval", "1", "must be a number"),
    ("max_turns", True, "must be a number"),
])
def test_session_config_refuses_out_of_range_values_with_the_range(field, value, words) -> None:
    with pytest.raises(SettingError) as e:
        SessionConfig(**{field: value})
    assert field in str(e.value) and words in str(e.value)
    assert isinstance(e.value, DuetError) and isinstance(e.value, InputError) and isinstance(e.value, ValueError)


def test_defaults_are_valid_and_declared_once() -> None:
    c = SessionConfig()
    assert (c.interval, c.frames_per_turn, c.tokens_per_frame, c.max_new_tokens, c.max_turns) == (1.0, 2, 128, 128, 0)
    assert c.seconds_per_turn == 2.0
    assert default(SessionConfig, "max_new_tokens") == 128 and limit(SessionConfig, "frames_per_turn").high == 4
    b = BackendSettings()
    assert (b.n_ctx, b.n_threads, b.n_gpu_layers, b.flash_attn) == (8192, 0, -1, "auto")
    with pytest.raises(SettingError, match="n_ctx must be within 1024 to 131072"):
        BackendSettings(n_ctx=16)
    with pytest.raises(SettingError, match="flash_attn"):
        BackendSettings(flash_attn="maybe")


def test_the_one_thread_policy() -> None:
    assert resolve_threads(3) == 3
    assert resolve_threads(0) == usable_cores()
    assert resolve_threads(0, leave_one_for_ui=True) == max(1, usable_cores() - 1)


@pytest.mark.parametrize(("flags", "words"), [
    (["--n-ctx", "16"], "--n-ctx must be within 1024 to 131072 tokens, got 16"),
    (["--talkativeness", "nan"], "--talkativeness must be within -50 to 50, got nan"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be within 1 to 1024 tokens, got 0"),
    (["--max-turns", "-1"], "--max-turns must be within 0 to 1000000000 turns, got -1"),
    (["--frames-per-turn", "two"], "'two' is not a whole number (1 to 4)"),
    (["--threads", "-2"], "--threads must be within 0 to 1024"),
])
def test_duet_run_refuses_bad_flags_before_loading_anything(flags, words, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        duet(["run", "--source", "screen", *flags])
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_duet_eval_takes_the_same_ranges(capsys) -> None:
    from app.eval.cli import main as duet_eval

    with pytest.raises(SystemExit):
        duet_eval(["data.jsonl", "--n-ctx", "16"])
    assert "--n-ctx must be within 1024 to 131072" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        duet_eval(["data.jsonl", "--interval", "0"])
    assert "--interval must be within 0.1 to 60 s" in capsys.readouterr().err


def test_cli_reports_user_errors_and_lets_bugs_show(tmp_path, capsys, monkeypatch) -> None:
    assert duet(["run", "--source", str(tmp_path / "gone.mp4"), "--model", "tiny"]) == 2
    assert "gone.mp4" in capsys.readouterr().err

    from app.modelhub.library import ModelLibrary

    def bug(_self):
        raise ValueError("a programming error, not bad input")

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(ModelLibrary, "entries", bug)
    with pytest.raises(ValueError, match="programming error"):  # a traceback, not "duet: error: …"
        duet(["models", "list"])
