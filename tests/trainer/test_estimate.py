"""The Train page's estimate for LoRA on the 3B (a formula: its pieces and its shape are checked)."""

from __future__ import annotations

from pathlib import Path

from app.trainer import estimate as est


def test_lora_parameter_count_matches_the_layer_shapes() -> None:
    per_layer = 16 * ((2048 + 2048) * 2 + (2048 + 256) * 2 + (2048 + 11008) * 3)
    assert est.LORA_PARAMS == 36 * per_layer == 29_933_568


def test_table_8_to_24_gb() -> None:
    rows = {int(e.vram_gib): e for e in est.estimate_table(1.0)}
    assert not rows[8].fits and "does not fit" in rows[8].note  # bf16 weights alone are 7 GiB
    assert all(rows[v].fits for v in (12, 16, 24))
    assert rows[12].window_turns < rows[16].window_turns == 64  # more memory, longer windows (capped)
    assert all(rows[v].peak_gib <= v * 1.0 for v in (12, 16, 24))
    assert rows[12].seconds_per_epoch > rows[16].seconds_per_epoch > rows[24].seconds_per_epoch
    two_hours = est.estimate_lora_3b(12, 2.0)
    assert abs(two_hours.seconds_per_epoch - 2 * rows[12].seconds_per_epoch) < 1e-6


def test_hardware_check_refuses_the_3b_without_a_gpu_and_a_full_disk(tmp_path: Path) -> None:
    hw = est.Hardware(gpu=None, vram_total_gib=0, vram_free_gib=0, disk_free_gib=100)
    ok, msg = est.check(hw, large_base=True, disk_need_gib=20)
    assert not ok and "needs a CUDA GPU" in msg
    assert est.check(hw, large_base=False, disk_need_gib=1)[0]
    small = est.Hardware(gpu="RTX", vram_total_gib=8, vram_free_gib=7.5, disk_free_gib=5)
    ok, msg = est.check(small, large_base=True, disk_need_gib=20)
    assert not ok and "does not fit" in msg and "GiB free on disk" in msg
    real = est.hardware(tmp_path / "not" / "yet")  # this machine: a folder that does not exist yet is fine
    assert real.disk_free_gib > 0
