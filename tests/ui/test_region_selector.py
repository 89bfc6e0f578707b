"""The region layer: a drag chooses a rectangle, a click or another key does nothing, Esc cancels."""

from __future__ import annotations

from app.ui.region_selector import RegionSelector


def drag(qtbot, layer, a, b) -> None:
    """Press at ``a``, move to ``b``, release there: a user drawing a rectangle."""
    from PySide6.QtCore import Qt

    qtbot.mousePress(layer, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(layer, b)
    qtbot.mouseRelease(layer, Qt.MouseButton.LeftButton, pos=b)


def test_region_layer_drag_chooses_and_esc_cancels(qtbot) -> None:
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QGuiApplication

    layer = RegionSelector()
    qtbot.addWidget(layer)
    assert layer.geometry() == QGuiApplication.primaryScreen().geometry()  # one screen offscreen
    layer.show()
    qtbot.waitExposed(layer)
    with qtbot.waitSignal(layer.chosen) as got:
        qtbot.mousePress(layer, Qt.MouseButton.LeftButton, pos=QPoint(300, 200))
        qtbot.mouseMove(layer, QPoint(200, 150))
        assert layer.selection() is not None and layer.selection().width() == 100
        layer.grab()  # paints the cut-out and its size label
        qtbot.mouseRelease(layer, Qt.MouseButton.LeftButton, pos=QPoint(100, 50))
    assert got.args == [100, 50, 200, 150] and not layer.isVisible()

    layer = RegionSelector()
    qtbot.addWidget(layer)
    layer.show()
    qtbot.keyClick(layer, Qt.Key.Key_A)  # other keys do nothing
    assert layer.isVisible()
    drag(qtbot, layer, QPoint(10, 10), QPoint(12, 13))  # a click, not a drag: keep the layer up
    assert layer.isVisible()
    with qtbot.waitSignal(layer.cancelled):
        qtbot.keyClick(layer, Qt.Key.Key_Escape)
    assert not layer.isVisible() and layer.result_rect is None
