"""Issue 26, item 16: one GPU choice, offered in the window and honoured as `duet run` and `duet serve` read it.

No GPU here: hardware detection's answer is given at its boundary (``hardware.detect``), and the engine is
the real one (the tiny model in its own process), so what is checked is that the choice reaches the
BackendSettings that process was started with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser
from app.core.config import BackendSettings, from_args
from app.core.settings import SettingsStore
from app.modelhub import hardware
from app.ui.worker import default_backend

from .conftest import configure

GIB = 2**30
TWO_GPUS = [hardware.GpuInfo(0, "CUDA0", "NVIDIA GeForce RTX 3060", 11 * GIB, 12 * GIB, "llama.cpp"),
            hardware.GpuInfo(1, "CUDA1", "NVIDIA RTX A4000", 15 * GIB, 16 * GIB, "llama.cpp")]


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    found = hardware.Hardware(cores=2, ram_total=8 * GIB, ram_available=6 * GIB, gpus=list(TWO_GPUS), build="CUDA")
    monkeypatch.setattr(hardware, "detect", lambda: found)


def test_the_settings_list_what_detection_found_and_the_choice_reaches_the_engine(
        qtbot, make_window, two_gpus: None, vtest_avi: Path, tmp_path: Path) -> None:
    started_with: list[BackendSettings] = []

    def engine(request):  # type: ignore[no-untyped-def]
        started_with.append(request.backend)
        return default_backend(request)  # the real engine, in its own process

    w = make_window(source=str(vtest_avi), backend_factory=engine)
    configure(w, interval=0.5, frames=1, talk=-50)
    dialog = w.settings_sync.open_settings()
    shown = [dialog.gpu.itemText(i) for i in range(dialog.gpu.count())]
    assert shown == ["Automatic (llama.cpp's choice)", "CPU only", "GPU 0: NVIDIA GeForce RTX 3060 · 12 GB",
                     "GPU 1: NVIDIA RTX A4000 · 16 GB"]
    assert dialog.gpu.currentText().startswith("Automatic")
    assert "2 GPUs found" in dialog.gpu_note.text()
    dialog.gpu.setCurrentIndex(3)
    dialog.accept()
    assert SettingsStore(tmp_path / "config").load().session.gpu == 1, "saved as settings.toml's [session] gpu"

    w.start()
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=60_000)
    assert started_with[-1].gpu == 1 and started_with[-1].n_gpu_layers == -1
    assert w.controller.backend.settings.gpu == 1, "the engine's process was started with GPU 1"
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)

    dialog = w.settings_sync.open_settings()
    assert dialog.gpu.currentText().startswith("GPU 1:"), "the dialog shows the choice in force"
    dialog.gpu.setCurrentIndex(dialog.gpu.findText("CPU only"))
    dialog.accept()
    w.start()
    qtbot.waitUntil(lambda: w.state == "running", timeout=60_000)
    assert started_with[-1].n_gpu_layers == 0 and started_with[-1].gpu == -1  # as --gpu-layers 0
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=60_000)


def test_a_gpu_chosen_before_but_not_found_now_is_kept_and_said(qtbot, make_window, tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "config")
    s = store.load()
    s.session.gpu = 3
    store.save(s)
    w = make_window()
    dialog = w.settings_sync.open_settings()
    assert dialog.gpu.currentText() == "GPU 3 (not found now: the engine will fail to use it)"
    assert dialog.gpu_note.text().startswith("No GPU this llama.cpp build can use was found. Takes effect")


@pytest.mark.parametrize("command", [["run", "--source", "clip.mp4"], ["serve"]])
def test_run_and_serve_read_gpu_the_same_way(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    a = build_parser().parse_args([*command, "--gpu", "1"])
    assert from_args(BackendSettings, a).gpu == 1
    assert from_args(BackendSettings, build_parser().parse_args(command)).gpu == -1  # automatic by default
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--gpu", "99"])
    assert "--gpu must be within -1 to 63, got 99" in capsys.readouterr().err
