"""The real window on a full disk: run by ``test_disk_full_gui.py`` inside a private mount namespace.

``$DUET_TINY_FS`` is a tmpfs of a few hundred KiB mounted there, so the ENOSPC comes from the
kernel. The window (pytest-qt, offscreen) keeps its settings, sessions and exports on it; each case
fills the disk at the moment that matters and checks the banner's exact words, that nothing
earlier was lost (files compared byte for byte) and that no temporary is left. The file name does
not start with ``test_``: it is collected only when that test names it, inside the namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from app.core.sessions import CUT_SHORT, SessionStore, load_session
from app.core.settings import SettingsStore
from app.core.types import Frame, StepResult, StepTimings
from app.modelhub.library import ModelLibrary
from app.speech.recorder import PushToTalkRecorder
from app.ui.main_window import MainWindow
from app.ui.speech_bridge import SpeechBridge, VoiceInput

from ..speech.fake_sounddevice import FakeSoundDevice
from .fulldisk import fill_up, listing, sha

FS = Path(os.environ.get("DUET_TINY_FS", "/nonexistent"))
PAGE = 4096  # tmpfs allocates whole pages
LONG = 60_000

pytestmark = pytest.mark.skipif(not os.path.ismount(FS), reason="runs inside test_disk_full_gui.py's namespace")


class Disk:
    """Fill the tiny filesystem to its last byte, and free it again."""

    def __init__(self) -> None:
        self.filler = FS / "filler"

    def fill(self) -> None:
        fill_up(self.filler)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk()
    yield d
    d.free()


@pytest.fixture
def room(request) -> Iterator[Path]:
    """This case's own folder on the tiny filesystem, removed after it."""
    d = FS / request.node.name.replace("[", "-").replace("]", "")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def window(qtbot, room: Path, tmp_path: Path, monkeypatch) -> Iterator[Callable[..., MainWindow]]:
    """The real main window with its settings and sessions on the tiny filesystem."""
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_DEV_MODELS", "1")  # the random tiny model; users never see it
    made: list[MainWindow] = []

    def make() -> MainWindow:
        store = SettingsStore(room / "config")
        settings = store.load()
        speech = SpeechBridge(settings.speech, output_dir=tmp_path / "voice")
        voice = VoiceInput(settings.speech, recorder=PushToTalkRecorder(sd=FakeSoundDevice()),
                           model_dir=tmp_path / "speech-models")
        w = MainWindow(store, session_store=SessionStore(room / "sessions"), library=ModelLibrary(tmp_path / "models"),
                       speech=speech, voice_input=voice, tray=False)
        qtbot.addWidget(w)
        # pytest-qt closes the window before the disk is freed: closing anyway is the answer there
        # (the case on closing itself asks the real dialog).
        w.confirm_close_unsaved = lambda problem: True  # type: ignore[method-assign]
        made.append(w)
        w.show()
        return w

    yield make
    for w in made:
        if w.isVisible() or w.runner.thread.isRunning():
            w.close()


def pad_to_page(path: Path) -> None:
    """Pad the file's last line with spaces (still the same JSON) up to a page boundary.

    Why: tmpfs gives a file whole pages, so an append that fits in its last page's slack succeeds
    even on a full disk. Real disks have the same slack; a case that needs *this* append to fail
    takes the slack away first.
    """
    data = path.read_bytes()
    assert data.endswith(b"\n")
    pad = (-len(data)) % PAGE
    path.write_bytes(data[:-1] + b" " * pad + b"\n")
    assert path.stat().st_size % PAGE == 0


def saved_session(root: Path, replies: int = 3) -> Path:
    store = SessionStore(root)
    w = store.create({"source": "file:street.mp4", "model": "tiny"}, durable=False)
    img = np.full((24, 32, 3), 90, dtype=np.uint8)
    for t in range(replies):
        w.add_step(StepResult(turn=t, video_time=float(t + 1), silent=False, text=f"reply {t}",
                              frames=(Frame(image=img, time=float(t + 1), index=t, source="street"),),
                              timings=StepTimings(total_ms=1.0)))
    w.close()
    return w.directory


# ---- a live session whose disk fills up ----------------------------------------------------------
def test_a_live_session_goes_on_unsaved_and_keeps_what_it_saved(qtbot, window, disk, room, vtest_avi):
    w = window()
    w.settings_sync.set_source(str(vtest_avi))
    w.watch.model_combo.setCurrentIndex(w.watch.model_combo.findData("tiny"))
    w.watch.interval_spin.setValue(0.5)
    w.watch.frames_spin.setValue(1)
    w.watch.talk_slider.setValue(50)  # the untrained model speaks every turn: every turn writes a thumbnail
    w.start()
    qtbot.waitUntil(lambda: len(w.watch.chat.replies()) >= 2, timeout=LONG)
    directory = w.controller.writer.directory
    disk.fill()
    qtbot.waitUntil(lambda: "The transcript could not be written" in w.last_error, timeout=LONG)
    shown = len(w.watch.chat.replies())
    qtbot.waitUntil(lambda: len(w.watch.chat.replies()) >= shown + 2, timeout=LONG)  # the session goes on
    banner = w.watch.banner
    assert banner.isVisible() and banner.text() == w.last_error
    assert re.fullmatch(
        rf"The transcript could not be written: the disk is full \(writing {re.escape(str(directory))}"
        r"/thumbs/turn-\d{6}\.jpg\)\. Free some space; the session goes on unsaved, and the turns saved "
        r"before are kept\.", w.last_error), w.last_error
    disk.free()  # the user makes room, then stops: the transcript gets its end record
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)

    saved = load_session(directory)
    assert saved.damaged_lines == 0 and saved.problem is None  # whole records only
    assert saved.ended == CUT_SHORT
    turns = [int(s["turn"]) for s in saved.steps]
    assert turns == list(range(len(turns))) and 2 <= len(turns) < len(w.watch.chat.replies())
    assert all((directory / s["thumb"]).is_file() for s in saved.steps)
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]
    w.sessions_page.refresh()
    item = w.sessions_page.list.item(0).text()
    assert item.endswith(f"{len(turns)} replies, {len(turns)} turns · the transcript stops early (a write failed)")


# ---- settings ------------------------------------------------------------------------------------
def test_settings_on_a_full_disk_keep_the_saved_file(qtbot, window, disk, room):
    w = window()
    w.save_settings()  # a settings file exists, as after any earlier run
    path = room / "config" / "settings.toml"
    before = path.read_bytes()
    disk.fill()
    dlg = w.settings_sync.open_settings()
    dlg.accept()  # OK in the Settings dialog saves
    expected = (f"Settings could not be saved: the disk is full (writing {path}). Free some space; the settings "
                "saved before are kept.")
    assert w.last_error == expected
    assert w.watch.banner.isVisible() and w.watch.banner.text() == expected
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.toml"]  # no temporary left


def test_the_first_run_wizard_on_a_full_disk_still_lets_the_app_start(qtbot, room, disk, tmp_path):
    from app.modelhub import hardware
    from app.modelhub.jobs import PullManager
    from app.ui.first_run import FirstRunWizard

    store = SettingsStore(room / "config")
    (room / "config").mkdir()
    disk.fill()
    wizard = FirstRunWizard(store, library=ModelLibrary(tmp_path / "models"), jobs=PullManager(),
                            hw=hardware.Hardware(2, 8 * 2**30, 6 * 2**30))
    qtbot.addWidget(wizard)
    wizard.done(1)
    assert wizard.save_problem == (f"Your first-run choices could not be saved: the disk is full (writing "
                                   f"{room / 'config' / 'settings.toml'}). Free some space; Duet starts anyway "
                                   "and asks them again next time.")
    assert list((room / "config").iterdir()) == []


# ---- the Sessions page: exports and marks ---------------------------------------------------------
def test_an_export_on_a_full_disk_keeps_the_earlier_file(qtbot, window, disk, room, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    directory = saved_session(room / "sessions")
    w = window()
    page = w.sessions_page
    w.tabs.setCurrentWidget(page)  # the Sessions tab (it refreshes its list when shown)
    page.list.setCurrentRow(0)
    out = room / "exports"
    out.mkdir()
    target = {"path": str(out / "street.md")}
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (target["path"], ""))
    page.md_button.click()
    first = (out / "street.md").read_bytes()
    assert b"reply 2" in first and not page.banner.isVisible()
    session_files = listing(directory)

    disk.fill()
    page.md_button.click()  # the same file again: an overwrite that cannot be written
    assert page.banner.isVisible() and page.banner.text() == page.last_error == (
        f"The export could not be written: the disk is full (writing {out / 'street.md'}). Free some space; "
        "nothing half-written was left, and a file that was there before is kept; export again once there is "
        "room.")
    assert (out / "street.md").read_bytes() == first
    target["path"] = str(out / "street.json")
    page.json_button.click()  # a new file: none is left behind, not even an empty one
    assert f"(writing {out / 'street.json'})" in page.banner.text()
    assert sorted(p.name for p in out.iterdir()) == ["street.md"]
    assert listing(directory) == session_files

    disk.free()
    page.json_button.click()
    assert not page.banner.isVisible()
    assert json.loads((out / "street.json").read_text())["steps"]


def test_a_mark_on_a_full_disk_is_not_shown_as_saved(qtbot, window, disk, room):
    directory = saved_session(room / "sessions")
    log = directory / "events.jsonl"
    pad_to_page(log)
    w = window()
    page = w.sessions_page
    w.tabs.setCurrentWidget(page)  # the Sessions tab (it refreshes its list when shown)
    page.list.setCurrentRow(0)
    bubble = page.chat.replies()[1]
    before = sha(log)

    disk.fill()
    bubble.buttons["wrong"].click()
    assert page.banner.isVisible() and page.banner.text() == page.last_error == (
        f"Your mark could not be saved: the disk is full (writing {log}). Free some space; the session's log "
        "is as it was; mark the reply again once there is room.")
    assert not bubble.buttons["wrong"].isChecked()  # the button shows what is saved
    assert sha(log) == before  # not even part of a line was left

    disk.free()
    bubble.buttons["wrong"].click()
    assert bubble.buttons["wrong"].isChecked() and not page.banner.isVisible()
    saved = load_session(directory)
    assert saved.feedback == {1: {"wrong"}} and saved.damaged_lines == 0


def test_closing_on_a_full_disk_asks_before_the_settings_are_lost(qtbot, window, disk, room):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    w = window()
    del w.confirm_close_unsaved  # the real question, not the fixture's stand-in
    w.save_settings()
    path = room / "config" / "settings.toml"
    before = path.read_bytes()
    disk.fill()
    w.watch.interval_spin.setValue(4.0)  # a change that cannot be saved
    asked: list[str] = []

    def answer(button: QMessageBox.StandardButton) -> None:
        def click() -> None:
            box = QApplication.activeModalWidget()
            assert isinstance(box, QMessageBox)
            asked.append(box.text())
            box.button(button).click()
        QTimer.singleShot(0, click)

    answer(QMessageBox.StandardButton.Cancel)
    assert not w.close() and w.isVisible()  # cancelled: the window stays, its banner says why
    expected = (f"Settings could not be saved: the disk is full (writing {path}). Free some space; the settings "
                "saved before are kept.")
    assert asked == [expected] and w.watch.banner.text() == expected
    answer(QMessageBox.StandardButton.Close)
    assert w.close() and not w.isVisible()
    assert len(asked) == 2
    assert path.read_bytes() == before  # the earlier file, whole
