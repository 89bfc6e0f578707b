"""Settings and session files carry a format version; older ones migrate, newer ones are never lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core import formats
from app.core.sessions import SessionStore, load_session
from app.core.settings import SettingsStore


def test_upgrade_runs_each_step_in_order_and_leaves_the_input_alone() -> None:
    steps = {0: lambda d: {**d, "a": d.get("a", 0) + 1}, 1: lambda d: {**d, "b": d["a"] * 10}}
    data = {"a": 1}
    up = formats.upgrade("settings", data, current=2, migrations=steps)
    assert up.data == {"a": 2, "b": 20, "format": 2} and up.found == 0 and up.migrated and not up.newer
    assert data == {"a": 1}
    with pytest.raises(ValueError, match="no migration from format 2"):
        formats.upgrade("settings", {"format": 2}, current=3, migrations=steps)


def test_a_newer_file_is_read_as_is() -> None:
    up = formats.upgrade("session", {"format": 99, "source": "x"})
    assert up.newer and not up.migrated and up.data == {"format": 99, "source": "x"}


def test_settings_written_now_carry_the_format(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path)
    store.save(store.load())
    assert f"format = {formats.SETTINGS_FORMAT}" in store.path.read_text()
    SettingsStore(tmp_path).load()
    assert not list(tmp_path.glob("settings.format-*"))  # same format: no copy


def test_settings_from_before_versioning_migrate_and_keep_a_copy(tmp_path: Path) -> None:
    old = '[session]\nsource = "camera:1"\ninterval = 2.0\n'
    (tmp_path / "settings.toml").write_text(old)
    store = SettingsStore(tmp_path)
    s = store.load()
    assert s.session.source == "camera:1" and s.session.interval == 2.0
    assert store.format_backup == tmp_path / "settings.format-0.toml"
    assert store.format_backup.read_text() == old
    store.save(s)
    assert "format = 1" in store.path.read_text()


def test_settings_from_a_newer_duet_are_read_and_never_lost(tmp_path: Path) -> None:
    newer = 'format = 7\n[session]\nsource = "screen:2"\n[brand_new]\nthing = "kept"\n'
    (tmp_path / "settings.toml").write_text(newer)
    store = SettingsStore(tmp_path)
    s = store.load()
    assert s.session.source == "screen:2"
    store.save(s)  # the older app rewrites the file in its own format …
    assert (tmp_path / "settings.format-7.toml").read_text() == newer  # … but the newer one is kept whole


def test_sessions_carry_the_format_and_old_ones_still_load(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    w = store.create({"source": "a.avi", "model": "demo"}, durable=False)
    w.close()
    meta = json.loads((w.directory / "meta.json").read_text())
    assert meta["format"] == formats.SESSION_FORMAT
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"id": "old", "source": "b.avi"}))
    s = load_session(old)
    assert s.meta["source"] == "b.avi" and s.meta["format"] == formats.SESSION_FORMAT
    assert "format" not in json.loads((old / "meta.json").read_text())  # reading never rewrites a session
