"""The source picker turns choices into specs and explains what is unavailable."""

from __future__ import annotations

import pytest

from app.capture.parse import parse_spec
from app.ui.source_picker import SourcePicker, describe


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
