"""Issue 26 (round 2), items 3 and 4: the status bar tells the truth, Ctrl+Q quits, the Sessions list is
readable, a video is named one way, and an export says where it went."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from app.capture.parse import canonical_spec
from app.core.types import Frame, StepResult

from .conftest import configure

LONG = 30_000


def test_a_new_session_shows_no_old_figures_and_an_error_leaves_no_opening_message(
        qtbot, make_window, vtest_avi: Path, tmp_path: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, talk=-50)
    w.start()
    qtbot.waitUntil(lambda: w.status.latency_label.text().endswith("ms"), timeout=LONG)
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
    assert w.status.rtf_label.text() != "RTF —" and w.status.context_label.text() != "context —"

    messages: list[str] = []
    w.statusBar().messageChanged.connect(messages.append)
    junk = tmp_path / "holiday.mp4"
    junk.write_bytes(np.random.default_rng(2).bytes(100_000))
    w.settings_sync.set_source(str(junk))
    w.start()
    # Before the new session's first step: none of the last session's figures.
    assert (w.status.latency_label.text(), w.status.rtf_label.text(), w.status.context_label.text()) == ("step —", "RTF —", "context —")
    qtbot.waitUntil(lambda: w.state == "idle" and not w.watch.banner.isHidden(), timeout=LONG)
    assert "holiday.mp4" in w.watch.banner.text()
    assert any(m.startswith("Opening") for m in messages), "the source was being opened"
    assert w.statusBar().currentMessage() == "", "the error replaced “Opening …”"
    assert w.status.latency_label.text() == "step —"


def test_ctrl_q_quits_from_any_duet_window(qtbot, make_window) -> None:
    w = make_window()
    w.show()
    w.activateWindow()
    qtbot.waitExposed(w)
    w.overlay.set_user_visible(True)
    qtbot.waitExposed(w.overlay)
    qtbot.keyClick(w.overlay.windowHandle(), Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=5_000)
    assert not w.overlay.isVisible() and not w.runner.thread.isRunning()


def _session(w, source: str, replies: int = 1) -> Path:  # type: ignore[no-untyped-def]
    writer = w.sessions.create({"source": source, "model": "tiny"})
    for turn in range(replies):
        writer.add_step(StepResult(turn=turn, video_time=2.0 * turn, text=f"Reply {turn}.", silent=False,
                                   frames=(Frame(np.full((90, 160, 3), 80, np.uint8), time=turn),)))
    writer.close()
    return writer.directory


def test_the_sessions_list_is_readable_and_a_video_reads_one_way(qtbot, make_window, tmp_path: Path) -> None:
    w = make_window()
    long_name = "/home/someone/Videos/holiday-in-the-mountains-with-the-whole-family-part-3.mp4"
    _session(w, f"file:{long_name}")
    _session(w, long_name)
    w.resize(1100, 700)
    w.show()
    qtbot.waitExposed(w)
    w.tabs.setCurrentWidget(w.sessions_page)
    page = w.sessions_page
    qtbot.waitUntil(lambda: page.list.count() == 2, timeout=5_000)
    lst = page.list
    assert w.width() == 1100, "a long path does not widen the window"
    assert lst.width() >= 300, "the list is wide enough to read"
    assert not lst.horizontalScrollBar().isVisible()
    first_lines = [lst.item(i).text().splitlines()[0] for i in range(2)]
    assert first_lines[0] == first_lines[1], "file:/… and /… are one video, named once"
    assert first_lines[0].endswith("Video file · holiday-in-the-mountains-with-the-whole-family-part-3.mp4")
    assert all(long_name in lst.item(i).toolTip() and "file:" not in lst.item(i).toolTip() for i in range(2))
    headers = []
    for i in range(2):
        lst.setCurrentRow(i)
        headers.append((page.header.text(), page.header.toolTip()))
    assert headers[0] == headers[1] and headers[0][1].endswith(f" · {long_name}")  # elided to fit, whole on hover
    # The Watch tab keeps the one form too, however the video was chosen.
    w.settings_sync.set_source(f"file:{long_name}")
    assert w.settings.session.source == long_name and w.watch.source_label.toolTip() == long_name
    assert canonical_spec("file:camera") == "file:camera", "a video named like a source kind keeps file:"
    assert canonical_spec("camera:2") == "camera:2"


def test_an_export_says_where_it_went_and_opens_its_folder(qtbot, make_window, tmp_path: Path,
                                                          monkeypatch) -> None:
    w = make_window()
    _session(w, "/videos/pasta.mp4", replies=2)
    page = w.sessions_page
    page.refresh()
    page.list.setCurrentRow(0)
    out = tmp_path / "exports" / "pasta.md"
    out.parent.mkdir()
    assert page.save_export(out, "md")
    assert not page.export_row.isHidden()
    assert page.export_note.text() == f"✓ Exported to {out}"
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    page.open_folder_button.click()
    assert opened == [str(out.parent)]
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)  # no file manager on this desktop
    page.open_folder_button.click()
    assert f"the folder is {out.parent}" in page.export_note.text()


def test_the_apps_flags_work_without_gui(qtbot, tmp_path: Path, monkeypatch) -> None:
    """``duet --no-first-run --source …`` (no ``gui``) opens the window at once: no wizard, the source taken."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.cli import main

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    seen: list[tuple[str, str]] = []

    def look_then_close() -> None:
        for top in QApplication.topLevelWidgets():
            if top.isVisible() and top.windowTitle() in ("Duet", "Welcome to Duet"):
                seen.append((top.windowTitle(), getattr(getattr(getattr(top, "watch", None), "source_label", None), "text", str)()))
        for top in QApplication.topLevelWidgets():
            if top.windowTitle() == "Welcome to Duet" and top.isVisible():
                top.reject()  # only if the flag was ignored: never hang the test on a modal wizard
        for top in QApplication.topLevelWidgets():
            if top.windowTitle() == "Duet":
                top.close()

    QTimer.singleShot(1500, look_then_close)
    assert main(["--no-first-run", "--no-tray", f"--config-dir={tmp_path / 'cfg'}", "--source", "camera:2"]) == 0
    assert [title for title, _ in seen] == ["Duet"], "the main window, and no first-run wizard"
    assert seen[0][1] == "Camera 2", "the flags reached the app"
