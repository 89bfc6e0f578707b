"""Hardware detection on this machine (llama.cpp's own device list) and the recommendation arithmetic.

This machine has no GPU; a GPU that cannot exist here appears only as a stand-in ``nvidia-smi``
script on PATH, printing what the real one prints for ``--query-gpu … --format=csv``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.modelhub import hardware
from app.modelhub.hardware import GIB, GpuInfo, Hardware

REPO = Path(__file__).resolve().parents[2]


def test_llama_device_list_is_read_from_the_build():
    devices = hardware.llama_devices()
    assert devices is not None, "the ggml backend device API should be reachable in llama-cpp-python's libggml"
    # This CPU build lists only its CPU device, which is not a GPU.
    assert devices == []
    hw = hardware.detect()
    assert hw.build == "CPU" and hw.cores >= 1 and 0 < hw.ram_available <= hw.ram_total


def _fake_smi(tmp_path: Path, lines: str) -> Path:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{lines}\nEOF\n")
    exe.chmod(0o755)
    return tmp_path


def test_gpu_present_but_cpu_build_says_how_to_switch(tmp_path, monkeypatch):
    bindir = _fake_smi(tmp_path, "0, NVIDIA GeForce RTX 4070, 11520, 12282\n1, NVIDIA RTX A2000, 5800, 6138")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    hw = hardware.detect()
    assert [g.name for g in hw.gpus_unused] == ["NVIDIA GeForce RTX 4070", "NVIDIA RTX A2000"]
    assert hw.gpus_unused[0].free == 11520 * 2**20
    hint = hardware.switch_hint(hw)
    assert hint and "make gpu" in hint and "CPU-only" in hint
    rec = hardware.recommend(hw)
    assert rec.device == "CPU" and any("make gpu" in r for r in rec.reasons)


def _gpu(free_gib: float, index: int = 0) -> GpuInfo:
    return GpuInfo(index, f"CUDA{index}", f"GPU {index}", int(free_gib * GIB), int(free_gib * GIB), "llama.cpp")


def test_recommendation_follows_free_gpu_memory():
    base = dict(cores=8, ram_total=32 * GIB, ram_available=24 * GIB)
    big = hardware.recommend(Hardware(**base, gpus=[_gpu(24)], build="CUDA"))
    assert (big.quant, big.gpu_layers, big.main_gpu) == ("F16", -1, 0)
    mid = hardware.recommend(Hardware(**base, gpus=[_gpu(5)], build="CUDA"))
    assert mid.quant in ("Q5_K_M", "Q4_K_M") and mid.gpu_layers == -1
    small = hardware.recommend(Hardware(**base, gpus=[_gpu(3)], build="CUDA"))
    assert small.quant == "Q4_K_M" and 0 < small.gpu_layers < hardware.N_LAYERS  # partial offload
    none = hardware.recommend(Hardware(**base, gpus=[_gpu(1)], build="CUDA"))
    assert none.device == "CPU" and none.gpu_layers == 0
    # Bigger quantizations never win with less memory.
    order = hardware.QUANT_ORDER
    assert order.index(big.quant) <= order.index(mid.quant) <= order.index(small.quant)


def test_choosing_a_gpu():
    hw = Hardware(8, 32 * GIB, 24 * GIB, gpus=[_gpu(24, 0), _gpu(4, 1)], build="CUDA")
    assert hardware.recommend(hw).main_gpu == 0
    second = hardware.recommend(hw, main_gpu=1)
    assert second.main_gpu == 1 and second.quant != "F16"


def test_cpu_recommendation_scales_with_cores():
    two = hardware.recommend(Hardware(2, 8 * GIB, 6 * GIB))
    sixteen = hardware.recommend(Hardware(16, 64 * GIB, 60 * GIB))
    assert two.interval > sixteen.interval and two.tokens_per_frame <= sixteen.tokens_per_frame
    starved = hardware.recommend(Hardware(2, 4 * GIB, 2 * GIB))
    assert not starved.fits and any("GiB of RAM" in r for r in starved.reasons)
    assert two.interval == 3.5 and two.tokens_per_frame == 64  # 6.8 s measured for 2 frames on 2 cores
    # Where pull makes a BF16 projector (a CPU with native BF16, no GPU), the faster step shortens the pace.
    two_bf16 = hardware.recommend(Hardware(2, 8 * GIB, 6 * GIB, cpu_bf16=True))
    assert two_bf16.interval == 3.0 and two_bf16.tokens_per_frame == 64  # 5.0 vs 6.3 s side by side


def test_select_gpu_sets_visibility_before_llama_cpp_loads():
    code = ("import os, sys; from app.modelhub.hardware import select_gpu; ok = select_gpu(1); "
            "print(ok, os.environ['CUDA_VISIBLE_DEVICES'], os.environ['GGML_VK_VISIBLE_DEVICES']); "
            "import llama_cpp; print(select_gpu(0))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.stdout.split() == ["True", "1", "1", "False"], r.stderr


def test_free_disk_of_a_path_not_yet_created(tmp_path):
    assert hardware.free_disk(tmp_path / "a" / "b") == hardware.free_disk(tmp_path) > 0


def test_projector_type_is_bf16_only_for_a_cpu_with_native_bf16_and_no_gpu():
    h100 = [GpuInfo(0, "CUDA0", "NVIDIA H100", 70 * GIB, 80 * GIB, "llama.cpp")]
    assert hardware.projector_type(Hardware(2, 8 * GIB, 6 * GIB, cpu_bf16=True)) == "bf16"
    assert hardware.projector_type(Hardware(2, 8 * GIB, 6 * GIB, cpu_bf16=False)) == "f16"
    # every GPU backend runs F16
    assert hardware.projector_type(Hardware(8, 32 * GIB, 30 * GIB, gpus=h100, cpu_bf16=True)) == "f16"


def test_the_recommended_pace_is_for_models_the_size_of_mmduet2():
    rec = hardware.recommend(Hardware(2, 8 * GIB, 6 * GIB))
    assert hardware.pace_for(int(1.8 * GIB), rec) == rec.interval == 3.5  # Q4_K_M's text model
    assert hardware.pace_for(200_000, rec) is None  # the demo: milliseconds a step anywhere
    gpu = hardware.recommend(Hardware(8, 32 * GIB, 30 * GIB, gpus=[_gpu(24)], build="CUDA"))
    assert gpu.gpu_layers == -1 and hardware.pace_for(int(1.8 * GIB), gpu) is None  # whatever the user picks
    part = hardware.recommend(Hardware(8, 32 * GIB, 30 * GIB, gpus=[_gpu(3)], build="CUDA"))
    assert 0 < part.gpu_layers < hardware.N_LAYERS and hardware.pace_for(int(1.8 * GIB), part) == part.interval
