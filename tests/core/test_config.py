"""One source of settings: defaults, ranges and the messages a bad value gets, in the API and the CLIs."""

from __future__ import annotations

import dataclasses
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
    with pytest.raises(SettingError, match="n_ctx must be within 256 to 131072"):
        BackendSettings(n_ctx=16)
    with pytest.raises(SettingError, match="flash_attn"):
        BackendSettings(flash_attn="maybe")


def test_the_one_thread_policy() -> None:
    assert resolve_threads(3) == 3
    assert resolve_threads(0) == usable_cores()
    assert resolve_threads(0, leave_one_for_ui=True) == max(1, usable_cores() - 1)


@pytest.mark.parametrize(("flags", "words"), [
    (["--n-ctx", "16"], "--n-ctx must be within 256 to 131072 tokens, got 16"),
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
    assert "--n-ctx must be within 256 to 131072" in capsys.readouterr().err
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


def _settings_options():
    """(command, argparse action, settings class, field) for every flag of every command that sets a field."""
    import argparse

    from app.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}".strip())
            else:
                yield path, action

    from app.engine.serve_policy import ServePolicy

    for cmd, action in walk(build_parser(), ""):
        for cls in (SessionConfig, BackendSettings, ServePolicy):
            declared = {f.name for f in dataclasses.fields(cls) if {"limit", "option"} & set(f.metadata)}
            if action.dest in declared:
                yield cmd, action, cls, action.dest


def test_every_settings_flag_is_generated_from_its_field():
    """A flag lands on its field's own name, with the field's default and range: nothing to map back by hand
    (``--threads`` fills ``n_threads``), nothing re-defaulted. A flag that reached a field under another name, or
    a hand-written flag with its own default or range, fails here."""
    found = list(_settings_options())
    assert {(cmd, f) for cmd, _, _, f in found} >= {
        ("run", "n_ctx"), ("run", "n_threads"), ("run", "n_gpu_layers"), ("run", "flash_attn"), ("run", "cpu_variant"),
        ("run", "interval"), ("eval", "n_ctx"), ("serve", "n_ctx"), ("serve", "max_tokens"),
        ("serve", "tokens_per_image"), ("serve", "generation_timeout")}
    for cmd, action, cls, name in found:
        assert action.default == default(cls, name), f"duet {cmd} {action.option_strings}: re-defaulted"
        meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
        if "limit" in meta:
            lim = meta["limit"]
            assert action.type(str(lim.low)) == lim.low and action.type(str(lim.high)) == lim.high, (cmd, name)
            step = 1 if isinstance(lim.low, int) else 1e-3
            for outside in (lim.low - step, lim.high + step):
                with pytest.raises(Exception, match="within"):
                    action.type(str(outside))
        else:
            assert action.choices == meta["option"]["choices"], (cmd, name)


def test_flags_build_the_same_frozen_settings_the_engine_gets():
    import argparse

    from app.core.config import from_args
    from app.engine.llama_backend import LlamaSettings

    a = argparse.Namespace(n_ctx=2048, n_threads=3, n_gpu_layers=0, flash_attn="off", cpu_variant="x64", model="demo")
    s = from_args(BackendSettings, a)
    assert s == BackendSettings(n_ctx=2048, n_threads=3, n_gpu_layers=0, flash_attn="off", cpu_variant="x64")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_ctx = 4096  # type: ignore[misc]
    engine = LlamaSettings.of(s, n_threads=2)
    assert (engine.n_ctx, engine.n_threads, engine.cpu_variant) == (2048, 2, "x64")
    assert isinstance(engine, BackendSettings)
