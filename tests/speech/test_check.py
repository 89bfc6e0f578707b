"""The speech output check names the first missing piece and how to install it."""

from __future__ import annotations

from pathlib import Path

from app.speech.check import sound_output, speech_output_problem


def _lib(name: str) -> str | None:
    return "libespeak-ng.so.1" if name == "espeak-ng" else None


def test_a_missing_player_is_named_with_its_debian_package(tmp_path: Path) -> None:
    problem = speech_output_problem(platform="linux", which=lambda _: None, find_library=_lib,
                                    snd_dir=tmp_path, env={})
    assert problem is not None and "aplay" in problem and "alsa-utils" in problem


def test_a_missing_engine_comes_first(tmp_path: Path) -> None:
    problem = speech_output_problem(platform="linux", which=lambda _: None, find_library=lambda _: None,
                                    snd_dir=tmp_path, env={})
    assert problem is not None and "espeak-ng" in problem


def test_no_sound_device_nor_server(tmp_path: Path) -> None:
    problem = speech_output_problem(platform="linux", which=lambda n: f"/usr/bin/{n}", find_library=_lib,
                                    snd_dir=tmp_path, env={})
    assert problem is not None and "no sound output" in problem


def test_a_complete_path_is_fine(tmp_path: Path) -> None:
    (tmp_path / "pcmC0D0p").touch()
    assert sound_output(tmp_path, {}) is not None
    assert speech_output_problem(platform="linux", which=lambda n: f"/usr/bin/{n}", find_library=_lib,
                                 snd_dir=tmp_path, env={}) is None
    (tmp_path / "pcmC0D0p").unlink()
    (tmp_path / "pulse").mkdir()
    (tmp_path / "pulse" / "native").touch()
    assert "PulseAudio" in (sound_output(tmp_path, {"XDG_RUNTIME_DIR": str(tmp_path)}) or "")


def test_other_systems_speak_through_their_own_service() -> None:
    assert speech_output_problem(platform="win32", which=lambda _: None) is None
