"""What this machine has (GPUs and their free memory, RAM, cores, disk) and what to run on it.

GPUs are listed by llama.cpp itself where the installed build can: the ggml backend device API
(``ggml_backend_dev_count`` / ``_get`` / ``_name`` / ``_description`` / ``_memory`` / ``_type``) is
called through ctypes on the ggml library that llama-cpp-python ships, so the list is exactly the
devices this build can use. A CPU-only build sees no GPU there; ``nvidia-smi`` then tells whether an
NVIDIA GPU is present anyway, which is when the user is told how to rebuild (``make gpu``).

The recommendation is arithmetic on measured figures (docs/models.md): MMDuet2 is Qwen2.5-VL-3B
(36 layers); the weights of each quantization and a fixed KV/vision allowance must fit the free
memory of the device that runs them, and on a CPU the interval must cover the measured compute per
frame, scaled by the cores. GPU step times were not measured here (no GPU): on a GPU the protocol's
defaults (1 s, 128 tokens a frame) are recommended.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 1024**3

# Sizes of MMDuet2 (Qwen2.5-VL-3B) files per quantization, in bytes: text model + F16 mmproj.
# F16, Q4_K_M and the mmproj were measured on the real 3B shape (docs/benchmarks.md §2); Q5_K_M and
# Q8_0 follow from llama.cpp's bits per weight (5.7, 8.5) for 3.09 B text parameters (docs/models.md).
MMPROJ_BYTES = int(1.25 * GIB)
TEXT_BYTES = {"Q4_K_M": int(1.80 * GIB), "Q5_K_M": int(2.07 * GIB), "Q8_0": int(3.06 * GIB),
              "F16": int(5.75 * GIB)}
RUNTIME_BYTES = int(1.0 * GIB)  # KV cache at 8k context, vision activations, compute buffers
N_LAYERS = 36
# Seconds a frame of the 3B (Q4_K_M, one batch a turn) on 2 quiet AVX-512 cores, by tokens per frame, for each
# vision projector type pull makes (docs/benchmarks.md §5: a 2-frame step of 14.4 / 6.8 s with an F16 projector;
# the BF16 projector's step measured side by side with F16 at 11.3 / 5.0 vs 14.0 / 6.3 s, scaled to the same run).
CPU_SECONDS_PER_FRAME_2_CORES = {"f16": {128: 7.2, 64: 3.4}, "bf16": {128: 5.8, 64: 2.7}}
QUANT_ORDER = ("F16", "Q8_0", "Q5_K_M", "Q4_K_M")  # best quality first


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    description: str
    free: int  # bytes; 0 when unknown
    total: int
    source: str  # "llama.cpp" (usable by this build) | "nvidia-smi" (present, this build cannot use it)


@dataclass
class Hardware:
    cores: int
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo] = field(default_factory=list)  # usable by the installed llama.cpp build
    gpus_unused: list[GpuInfo] = field(default_factory=list)  # present, but this build cannot use them
    build: str = "CPU"  # the GPU backend compiled into llama.cpp, or CPU
    cpu_bf16: bool = False  # llama.cpp's CPU backend multiplies BF16 natively (AVX-512 BF16)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendation:
    quant: str
    device: str  # "GPU 0 (NVIDIA …)" or "CPU"
    main_gpu: int  # -1 = CPU
    gpu_layers: int
    tokens_per_frame: int
    interval: float
    fits: bool  # False: even the smallest quantization does not fit; the numbers say why
    reasons: tuple[str, ...]

    def to_json(self) -> dict:
        return asdict(self)


def cpu_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def ram() -> tuple[int, int]:
    """(total, available) bytes of RAM."""
    info = _meminfo()
    if info:
        return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
    try:  # macOS and other POSIX systems without /proc
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return total, avail
    except (ValueError, OSError, AttributeError):
        return 0, 0


def free_disk(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


# ---- GPUs through llama.cpp's ggml backend registry ----------------------------------------------
_DEV_TYPE_GPU = 1  # enum ggml_backend_dev_type: CPU=0, GPU=1, ACCEL=2 (IGPU=3 in newer ggml)
_DEV_TYPE_IGPU = 3


def _ggml_lib() -> ctypes.CDLL | None:
    """The ggml library inside the installed llama-cpp-python, its backends loaded (app/modelhub/llama_lib.py)."""
    try:
        from app.modelhub.llama_lib import ggml

        return ggml()
    except (ImportError, OSError, AttributeError):
        return None


def llama_devices() -> list[GpuInfo] | None:
    """GPU devices of the installed llama.cpp build, or None when the build does not expose the API."""
    lib = _ggml_lib()
    if lib is None:
        return None
    out = []
    for i in range(int(lib.ggml_backend_dev_count())):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) not in (_DEV_TYPE_GPU, _DEV_TYPE_IGPU):
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(GpuInfo(len(out), (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                           (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                           int(free.value), int(total.value), "llama.cpp"))
    return out


def nvidia_smi_gpus(timeout: float = 5.0) -> list[GpuInfo]:
    """NVIDIA GPUs as the driver reports them (empty without a driver or GPU)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        r = subprocess.run([exe, "--query-gpu=index,name,memory.free,memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    out = []
    for line in r.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            try:
                out.append(GpuInfo(int(parts[0]), parts[1], parts[1], int(float(parts[2])) * 2**20,
                                   int(float(parts[3])) * 2**20, "nvidia-smi"))
            except ValueError:
                continue
    return out


def build_backend() -> str:
    """The GPU backend compiled into the installed llama.cpp (CUDA, Metal, Vulkan, …) or CPU."""
    try:
        import llama_cpp

        from app.modelhub.llama_lib import load_backends

        load_backends()
    except (ImportError, OSError):
        return "none"
    if not llama_cpp.llama_supports_gpu_offload():
        return "CPU"
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return next((b for b in ("CUDA", "Metal", "Vulkan", "ROCm", "HIP", "SYCL") if b in info), "GPU")


def cpu_has_native_bf16() -> bool:
    """Whether llama.cpp's CPU backend multiplies BF16 natively here (x86 AVX-512 BF16)."""
    try:
        import llama_cpp

        from app.modelhub.llama_lib import load_backends

        load_backends()
    except (ImportError, OSError):
        return False
    return "AVX512_BF16 = 1" in llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def projector_type(hw: Hardware) -> str:
    """The vision projector's type for a model pulled on ``hw``: "bf16" where no GPU will run it and the CPU
    multiplies BF16 natively (the 3B encoder 1.6× faster than F16 there, docs/benchmarks.md §1; MMDuet2 is
    published in BF16, so it is also exact), else "f16", which every llama.cpp backend runs."""
    return "bf16" if hw.cpu_bf16 and not hw.gpus else "f16"


def detect() -> Hardware:
    total, avail = ram()
    hw = Hardware(cpu_cores(), total, avail, build=build_backend(), cpu_bf16=cpu_has_native_bf16())
    devices = llama_devices()
    if devices is not None:
        hw.gpus = devices
    if not hw.gpus:
        hw.gpus_unused = nvidia_smi_gpus()
    return hw


def switch_hint(hw: Hardware) -> str | None:
    """On a CPU-only build with a GPU present: how to get a build that uses it."""
    if hw.gpus or not hw.gpus_unused:
        return None
    names = ", ".join(g.name for g in hw.gpus_unused)
    return (f"{names} found, but this llama.cpp build is CPU-only. Rebuild it for the GPU with `make gpu` "
            "(or: python installer/build_llama.py --flavour cuda).")


def recommend(hw: Hardware, main_gpu: int | None = None) -> Recommendation:
    """Quantization, GPU layers, tokens per frame and interval for MMDuet2 on ``hw``.

    On a GPU the best quantization whose weights + runtime fit the free memory wins, all layers
    offloaded; on a CPU it is Q4_K_M (memory bandwidth bound: fewer bytes per token is faster) with
    fewer vision tokens and a longer interval so a step stays within it.
    """
    reasons: list[str] = []
    gpus = hw.gpus
    if main_gpu is not None and main_gpu >= 0:
        gpus = [g for g in hw.gpus if g.index == main_gpu] or hw.gpus
    gpu = max(gpus, key=lambda g: g.free, default=None)
    if gpu is not None:
        free = gpu.free or gpu.total
        for q in QUANT_ORDER:
            need = TEXT_BYTES[q] + MMPROJ_BYTES + RUNTIME_BYTES
            if need <= free:
                reasons.append(f"{q} needs {need / GIB:.1f} GiB; GPU {gpu.index} ({gpu.description or gpu.name}) "
                               f"has {free / GIB:.1f} GiB free")
                return Recommendation(q, f"GPU {gpu.index} ({gpu.description or gpu.name})", gpu.index, -1, 128,
                                      1.0, True, tuple(reasons))
        # Partial offload: as many of the 36 layers as fit beside the projector and runtime.
        per_layer = TEXT_BYTES["Q4_K_M"] / N_LAYERS
        layers = int(max(0, free - MMPROJ_BYTES - RUNTIME_BYTES) // per_layer)
        if layers > 0:
            reasons.append(f"GPU {gpu.index} has {free / GIB:.1f} GiB free: {layers} of {N_LAYERS} layers fit")
            return Recommendation("Q4_K_M", f"GPU {gpu.index} ({gpu.description or gpu.name}) + CPU", gpu.index,
                                  min(layers, N_LAYERS), 128, 2.0, True, tuple(reasons))
        reasons.append(f"GPU {gpu.index} has only {free / GIB:.1f} GiB free; running on the CPU")
    need = TEXT_BYTES["Q4_K_M"] + MMPROJ_BYTES + RUNTIME_BYTES
    fits = hw.ram_available >= need
    reasons.append(f"Q4_K_M needs {need / GIB:.1f} GiB of RAM; {hw.ram_available / GIB:.1f} GiB available")
    hint = switch_hint(hw)
    if hint:
        reasons.append(hint)
    # CPU: seconds of compute per frame measured for the 3B shape on 2 quiet Zen 4 cores, with the projector
    # type pull makes here, scaled by the core count; a slower CPU falls behind and the cadence policy says so.
    # The interval must cover one frame's share of a step, so the model keeps up with what it watches.
    projector = projector_type(hw)
    per_frame = {tokens: secs * 2 / max(1, hw.cores) for tokens, secs in CPU_SECONDS_PER_FRAME_2_CORES[projector].items()}
    tokens = 128 if per_frame[128] <= 2.0 else 64
    interval = max(1.0, math.ceil(per_frame[tokens] * 2) / 2)
    proj = " (BF16 vision projector: this CPU multiplies BF16 natively)" if projector == "bf16" else ""
    reasons.append(f"on {hw.cores} CPU cores{proj} a frame of {tokens} tokens costs about {per_frame[tokens]:.1f} s: "
                   f"one frame every {interval:g} s keeps up")
    return Recommendation("Q4_K_M", "CPU", -1, 0, tokens, interval, fits, tuple(reasons))


# A text model this large is MMDuet2's 3B (its smallest quantization, Q4_K_M, is 1.8 GiB): the recommendation's
# pace was measured for it. The demo model and models trained on its tiny base are a few MB and step in milliseconds.
MMDUET2_CLASS_BYTES = 1 * GIB


def pace_for(model_bytes: int, rec: Recommendation) -> float | None:
    """The interval to propose when the user picks a model of ``model_bytes``: the recommendation's for a model
    the size of MMDuet2 run on the CPU, wholly or in part (on 2 cores a frame every 3 s, or 3.5 s without native
    BF16), where it comes from a
    measured cost. None for a small model, and on a GPU that holds every layer (a 3B step took 0.1 s on an H100:
    any pace the user picks keeps up)."""
    if model_bytes < MMDUET2_CLASS_BYTES or rec.gpu_layers == -1:
        return None
    return rec.interval


def describe(hw: Hardware) -> list[str]:
    """Human-readable lines for the CLI and the Models page."""
    lines = [f"CPU: {hw.cores} cores · RAM {hw.ram_available / GIB:.1f} of {hw.ram_total / GIB:.1f} GiB available",
             f"llama.cpp build: {hw.build}"]
    for g in hw.gpus:
        lines.append(f"GPU {g.index}: {g.description or g.name} · {g.free / GIB:.1f} of {g.total / GIB:.1f} GiB free")
    for g in hw.gpus_unused:
        lines.append(f"GPU {g.index}: {g.name} (not usable by this build)")
    if not hw.gpus and not hw.gpus_unused:
        lines.append("GPU: none found")
    return lines


def select_gpu(index: int | None) -> bool:
    """Make llama.cpp use only GPU ``index`` (numbered as ``nvidia-smi`` / ``duet models recommend`` list them).

    Done with the drivers' own visibility variables (CUDA, Vulkan, ROCm) so that the text model and
    the vision projector land on the same device. They are read when llama.cpp initialises its
    backends, so this must run before llama_cpp is imported; returns False (and changes nothing)
    when it is too late, so the caller can say that a restart is needed.
    """
    import sys

    if index is None or index < 0:
        return True
    if "llama_cpp" in sys.modules:
        return False
    os.environ.update(gpu_visibility(index))
    return True


def gpu_visibility(index: int) -> dict[str, str]:
    """The environment that shows llama.cpp GPU ``index`` only (:func:`select_gpu`; the engine's process)."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # the order nvidia-smi uses
    env.update({var: str(index) for var in ("CUDA_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")})
    return env
