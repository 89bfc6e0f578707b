"""Models Duet offers to pull, and whether each quantization fits this machine.

One entry today: MMDuet2, the model Duet's protocol was trained for. Base Qwen2.5-VL checkpoints
are pullable by name (``duet models pull Qwen/…``) but not offered: they were never trained to stay
silent, so they speak at every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.modelhub import hardware
from app.modelhub.hardware import GIB, Hardware


@dataclass(frozen=True)
class Pullable:
    repo: str
    title: str
    about: str
    download_bytes: int  # the checkpoint as published (bf16 safetensors)

    def size(self, quant: str) -> int:
        """Bytes in the library after the pull: the text model at ``quant`` + the F16 mmproj."""
        return hardware.TEXT_BYTES[quant] + hardware.MMPROJ_BYTES


MMDUET2 = Pullable("wangyueqian/MMDuet2", "MMDuet2 (3B)",
                   "Qwen2.5-VL-3B trained to watch a stream and speak only when something is worth saying.",
                   int(7.0 * GIB))
CATALOG: tuple[Pullable, ...] = (MMDUET2,)


def fits(hw: Hardware, quant: str) -> str:
    """"GPU", "CPU" (fits in RAM, no usable GPU memory for it) or "no"."""
    need = hardware.TEXT_BYTES[quant] + hardware.MMPROJ_BYTES + hardware.RUNTIME_BYTES
    if any((g.free or g.total) >= need for g in hw.gpus):
        return "GPU"
    if hw.ram_available >= need:
        return "CPU"
    return "no"
