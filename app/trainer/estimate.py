"""Will this job fit, and how long will it take? Hardware check and the LoRA-on-3B estimate.

The formula (explained with its numbers in ``docs/training-estimates.md``):

* memory = weights (bf16, frozen) + LoRA state (fp32 weight + grad + two Adam moments)
  + CUDA context + activations; activations with gradient checkpointing ≈ ``ACT_BYTES_PER_TOKEN``
  per token of the longest dialogue (one layer input kept per layer + one layer recomputed); the
  logits cost nothing extra because only trained positions are projected (``sft.dialogue_loss``);
* the longest dialogue that fits is what is left ÷ bytes a token; a session is cut into windows of
  that many turns (``data.window_turns``);
* time per epoch = tokens × FLOPs a token ÷ effective throughput. FLOPs a token: the language model
  6·N (forward, backward through activations, recomputation; no weight gradients but LoRA's) plus
  the frozen vision tower's forward on the 4 patches behind each visual token.

These are estimates, not measurements: no GPU was available where they were written; the
throughput assumed per GPU class is stated next to each figure.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30

# Qwen2.5-VL-3B (MMDuet2's base)
LM_PARAMS = 3.09e9
VISION_PARAMS = 0.67e9
HIDDEN, LAYERS, FFN, KV_DIM = 2048, 36, 11008, 256
LORA_R = 16
# LoRA on q, k, v, o, gate, up, down of every layer: r · (in + out) each
LORA_PARAMS = LAYERS * LORA_R * (2 * (HIDDEN + HIDDEN) + 2 * (HIDDEN + KV_DIM) + 3 * (HIDDEN + FFN))
CONTEXT_BYTES = 0.6 * GIB  # CUDA context, cuBLAS workspace, allocator slack
# kept layer inputs (bf16) + one layer recomputed (attention + MLP intermediates, bf16)
ACT_BYTES_PER_TOKEN = LAYERS * HIDDEN * 2 + (12 * HIDDEN + 3 * FFN) * 2
TEXT_TOKENS_PER_TURN = 12  # role markers, "NO REPLY" or a short reply
FLOPS_PER_TOKEN = 6 * LM_PARAMS
FLOPS_PER_VISUAL_TOKEN = FLOPS_PER_TOKEN + 2 * VISION_PARAMS * 4
# assumed effective bf16 throughput (≈ 35 % of a typical card's dense tensor peak) per memory class
ASSUMED_TFLOPS = {8: 15.0, 12: 20.0, 16: 30.0, 24: 50.0}
# Free disk a feedback job on the 3B needs at its peak (docs/training-estimates.md), in GiB: the merged bf16
# checkpoint (7.0), the base's and the new model's Q8_0 pairs (5.6 each: 3.1 text + 2.5 f32 mmproj) and, while a
# round's export quantizes, its f32 text model (11.5). The demo base needs half a GiB.
DISK_NEED_GIB = {"large": 30.0, "demo": 0.5}
MIN_WINDOW_TURNS = 8  # below this a dialogue holds too little context to teach timing


@dataclass
class Estimate:
    vram_gib: float
    fits: bool
    peak_gib: float  # at the chosen window
    window_turns: int  # the longest window that fits (capped at 64)
    seconds_per_epoch: float
    tflops_assumed: float
    note: str = ""


def weights_bytes() -> float:
    return (LM_PARAMS + VISION_PARAMS) * 2


def lora_state_bytes() -> float:
    return LORA_PARAMS * 16


def turn_tokens(frames_per_turn: int = 2, tokens_per_frame: int = 128) -> int:
    return frames_per_turn * (tokens_per_frame + 2) + TEXT_TOKENS_PER_TURN


def estimate_lora_3b(vram_gib: float, hours: float = 1.0, *, interval: float = 1.0, frames_per_turn: int = 2,
                     tokens_per_frame: int = 128, tflops: float | None = None) -> Estimate:
    """LoRA r=16 on Qwen2.5-VL-3B for ``hours`` of sessions (every turn trained once: an upper bound)."""
    fixed = weights_bytes() + lora_state_bytes() + CONTEXT_BYTES
    per_turn = turn_tokens(frames_per_turn, tokens_per_frame) * ACT_BYTES_PER_TOKEN
    free = vram_gib * GIB - fixed
    window = int(min(64, max(0, free // per_turn)))
    fits = window >= MIN_WINDOW_TURNS
    tf = tflops if tflops is not None else ASSUMED_TFLOPS.get(int(vram_gib), 25.0)
    turns = hours * 3600 / (interval * frames_per_turn)
    visual = turns * frames_per_turn * tokens_per_frame
    text = turns * (turn_tokens(frames_per_turn, tokens_per_frame) - frames_per_turn * tokens_per_frame)
    secs = (visual * FLOPS_PER_VISUAL_TOKEN + text * FLOPS_PER_TOKEN) / (tf * 1e12)
    peak = (fixed + max(window, 1) * per_turn) / GIB
    if fits:
        note = f"windows of {window} turns"
    else:
        need = (fixed + MIN_WINDOW_TURNS * per_turn) / GIB
        note = f"does not fit: the bf16 weights alone are {weights_bytes() / GIB:.1f} GiB; needs ≈ {need:.1f} GiB"
    return Estimate(vram_gib, fits, round(peak, 2), window, secs, tf, note)


def estimate_table(hours: float = 1.0) -> list[Estimate]:
    """The page's table: 8, 12, 16 and 24 GB GPUs."""
    return [estimate_lora_3b(v, hours) for v in (8, 12, 16, 24)]


@dataclass
class Hardware:
    gpu: str | None  # name of CUDA device 0, None without one
    vram_total_gib: float
    vram_free_gib: float
    disk_free_gib: float


def hardware(folder: Path) -> Hardware:
    """What this machine offers now: CUDA GPU 0 (if torch sees one) and free disk where the job writes."""
    gpu, total, free = None, 0.0, 0.0
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            f, t = torch.cuda.mem_get_info(0)
            total, free = t / GIB, f / GIB
    except Exception:  # noqa: BLE001 - a broken driver means "no usable GPU", which the check reports
        gpu = None
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    disk = shutil.disk_usage(probe).free / GIB
    return Hardware(gpu, round(total, 2), round(free, 2), round(disk, 2))


def check(hw: Hardware, *, large_base: bool, disk_need_gib: float) -> tuple[bool, str]:
    """(can start, what to tell the user) for a job on this hardware."""
    problems = []
    if hw.disk_free_gib < disk_need_gib:
        problems.append(f"only {hw.disk_free_gib:.1f} GiB free on disk, the job needs ≈ {disk_need_gib:.1f} GiB")
    if large_base:
        if hw.gpu is None:
            problems.append("the 3B base needs a CUDA GPU; none is visible (the demo base trains on the CPU)")
        else:
            e = estimate_lora_3b(hw.vram_free_gib)
            if not e.fits:
                problems.append(f"{hw.gpu}: {hw.vram_free_gib:.1f} GiB free; {e.note}")
    if problems:
        return False, "; ".join(problems)
    where = f"{hw.gpu} ({hw.vram_free_gib:.1f} of {hw.vram_total_gib:.1f} GiB free)" if hw.gpu else "the CPU"
    return True, f"OK: trains on {where}; {hw.disk_free_gib:.0f} GiB free on disk"
