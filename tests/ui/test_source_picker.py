"""The source picker turns choices into specs and explains what is unavailable."""

from __future__ import annotations

import pytest

from app.capture.parse import parse_spec
from app.ui.source_picker import SourcePicker, describe

from .test_region_selector import drag


def test_specs_from_each_tab(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    p = SourcePicker("file:/videos/pasta.mp4")
    qtbot.addWidget(p)
    assert p.tabs.currentIndex() == 4 and p.current_spec() == "file:/videos/pasta.mp4"
    assert "not available" in p.screen_message.text()  # no display: said, not crashed
    p.tabs.setCurrentIndex(3)
    p.camera_index.setValue(2)
    assert p.current_spec() == "camera:2"
    p.tabs.setCurrentIndex(2)
    p.region_edit.setText("10,20,640,480")
    p._accept()
    assert p.result() == 1 and p.spec() == "region:10,20,640,480"
    assert parse_spec(p.spec()).region == (10, 20, 640, 480)


def test_bad_region_is_explained_in_the_dialog(qtbot) -> None:
    p = SourcePicker("region:0,0,10,10")
    qtbot.addWidget(p)
    p.region_edit.setText("10,20,-5,480")
    p._accept()
    assert p.result() == 0 and not p.error.isHidden()
    assert "width and height" in p.error.text()


@pytest.mark.parametrize(("spec", "text"), [
    ("screen:0", "Whole desktop"), ("screen:2", "Screen 2"), ("camera:1", "Camera 1"),
    ("/a/b/clip.mkv", "Video file · clip.mkv"), ("window:Firefox", "Window · Firefox"),
    ("region:1,2,300,200", "Region 300×200 at 1,2"),
])
def test_describe(spec: str, text: str) -> None:
    assert describe(spec) == text


def test_draw_on_screen_runs_the_layer_and_fills_the_region(qtbot) -> None:
    """The whole flow as a user clicks it: Region tab → Draw on screen… → drag → the picker is back, filled."""
    from PySide6.QtCore import QPoint, QTimer
    from PySide6.QtWidgets import QApplication, QPushButton

    from app.ui.region_selector import RegionSelector
    from app.ui.source_picker import SourcePicker, pick_source

    steps: list[str] = []

    def drive() -> None:
        top = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
        picker = next((w for w in top if isinstance(w, SourcePicker)), None)
        layer = next((w for w in top if isinstance(w, RegionSelector)), None)
        if layer is not None:
            steps.append("layer")
            drag(qtbot, layer, QPoint(40, 30), QPoint(360, 270))
        elif picker is not None and "picker" not in steps:
            steps.append("picker")
            picker.tabs.setCurrentIndex(2)
            next(b for b in picker.findChildren(QPushButton) if b.text() == "Draw on screen…").click()
        elif picker is not None:
            steps.append(f"again:{picker.tabs.currentIndex()}:{picker.region_edit.text()}")
            picker._accept()
            return
        QTimer.singleShot(100, drive)

    QTimer.singleShot(50, drive)
    spec = pick_source("screen:1")
    assert steps[:2] == ["picker", "layer"]
    assert steps[2] == "again:2:40,30,320,240"
    assert spec == "region:40,30,320,240"


def test_cancelling_the_layer_returns_to_the_region_tab(qtbot) -> None:
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.ui.region_selector import RegionSelector
    from app.ui.source_picker import SourcePicker, pick_source

    seen: list[int] = []

    def drive() -> None:
        top = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
        layer = next((w for w in top if isinstance(w, RegionSelector)), None)
        picker = next((w for w in top if isinstance(w, SourcePicker)), None)
        if layer is not None:
            qtbot.keyClick(layer, Qt.Key.Key_Escape)
        elif picker is not None and not seen:
            seen.append(-1)
            picker._draw_region()
        elif picker is not None:
            seen.append(picker.tabs.currentIndex())
            picker.reject()
            return
        QTimer.singleShot(100, drive)

    QTimer.singleShot(100, drive)
    assert pick_source("camera:0") is None
    assert seen == [-1, 2]
