"""The Pace controls say how often the model decides."""

from __future__ import annotations

from app.ui.pace import pace_text


def test_pace_text() -> None:
    assert pace_text(1.0, 2) == "The model decides every 2 s on 2 frames (one frame each 1 s)."
    assert pace_text(0.75, 1) == "The model decides every 0.75 s on 1 frame."
    assert pace_text(0.5, 4) == "The model decides every 2 s on 4 frames (one frame each 0.5 s)."


def test_the_window_updates_the_hint(qtbot, make_window) -> None:
    w = make_window()
    w.watch.interval_spin.setValue(1.5)
    w.watch.frames_spin.setValue(2)
    assert w.watch.pace_label.text() == "The model decides every 3 s on 2 frames (one frame each 1.5 s)."


def _sized_like(tiny_model, tmp_path, size: int):
    """The tiny model's pair, its text model grown (sparse, zeros after the tensors) to ``size`` bytes."""
    import os
    import shutil

    model = tmp_path / f"model-{size}.gguf"
    shutil.copyfile(tiny_model.model, model)
    os.truncate(model, max(size, model.stat().st_size))
    return model, tiny_model.mmproj


def test_choosing_a_model_the_size_of_mmduet2_sets_the_recommended_pace(qtbot, make_window, tiny_model,
                                                                         tmp_path) -> None:
    from dataclasses import replace

    from app.modelhub import hardware

    w = make_window()
    w.model_page.rec = replace(w.model_page.rec, device="CPU", gpu_layers=0, interval=3.0)  # 2 cores (test_hardware)
    big = w.library.add("mmduet2-q4_k_m", *_sized_like(tiny_model, tmp_path, 2 * hardware.GIB), copy=False)
    small = w.library.add("mine", *_sized_like(tiny_model, tmp_path, 0), copy=False)
    w.watch.interval_spin.setValue(1.0)

    w.model_page.default_chosen.emit(small.name)  # "Use by default" on a small model: a fast step, pace kept
    assert w.watch.interval_spin.value() == 1.0 and not w.watch.chat.notices()

    w.model_page.default_chosen.emit(big.name)
    assert w.settings.session.model == big.name
    assert w.watch.interval_spin.value() == 3.0 and w.settings.session.interval == 3.0
    assert "a frame every 3 s" in w.watch.chat.notices()[-1]
    assert w.watch.pace_label.text() == "The model decides every 6 s on 2 frames (one frame each 3 s)."

    w.watch.interval_spin.setValue(1.5)  # the user's own choice afterwards stands until a model is chosen again
    w.save_settings()
    assert w.settings.session.interval == 1.5
    index = w.watch.model_combo.findData(big.name)
    w.watch.model_combo.setCurrentIndex(index)
    w.watch.model_combo.activated.emit(index)  # picked again in the drop-down
    assert w.watch.interval_spin.value() == 3.0
