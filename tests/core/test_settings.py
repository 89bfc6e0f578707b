"""Settings survive a restart, and a damaged file never stops the app."""

from __future__ import annotations

from pathlib import Path

from app.core.settings import Settings, SettingsStore, to_toml


def test_round_trip_through_disk(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    s = Settings()
    s.session.source = 'window:My "quoted" title \\ with backslash'
    s.session.interval = 1.5
    s.session.talkativeness = -7.5
    s.speech.muted = True
    s.speech.rate = 210
    s.overlay.click_through = True
    s.shortcuts.mute = "Ctrl+Alt+M"
    store.save(s)
    again = SettingsStore(tmp_path).load()
    assert again == s
    assert store.recovered_from is None


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert SettingsStore(tmp_path / "nowhere").load() == Settings()


def test_corrupt_file_is_set_aside_and_defaults_restored(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    store.path.write_text("[session\ninterval = = 3\n\x00garbage", encoding="utf-8")
    loaded = store.load()
    assert loaded == Settings()
    assert not store.path.exists()
    assert store.recovered_from is not None and store.recovered_from.exists()
    assert "garbage" in store.recovered_from.read_text(encoding="utf-8")
    store.save(loaded)  # and the app can write a fresh one
    assert SettingsStore(tmp_path).load() == Settings()


def test_wrong_types_and_unknown_keys_keep_defaults_field_by_field(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    store.path.write_text(
        '[session]\ninterval = "fast"\nframes_per_turn = 1\ntalkativeness = 3\nunknown = 1\n'
        '[speech]\nmuted = 1\nrate = 150\n[nonsense]\nx = 1\n', encoding="utf-8")
    s = store.load()
    assert s.session.interval == Settings().session.interval  # "fast" rejected
    assert s.session.frames_per_turn == 1
    assert s.session.talkativeness == 3.0 and isinstance(s.session.talkativeness, float)
    assert s.speech.muted is False  # 1 is not a bool
    assert s.speech.rate == 150


def test_save_is_atomic_no_temp_files_left(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    for i in range(3):
        s = Settings()
        s.speech.rate = 100 + i
        store.save(s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.toml"]
    assert "rate = 102" in to_toml(store.load())
