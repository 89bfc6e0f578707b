"""Shared helpers for the benchmarks: machine facts, frames, tables, JSON results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # Debian opencv-doc, 768×576 street scene
DEMO = REPO / ".cache" / "test-data" / "models" / "demo"  # the trained demo model (the engine tests train it)

os.environ.setdefault("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.basicConfig(level=logging.ERROR)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import llama_cpp

    from app.modelhub.llama_lib import load_backends

    backends = load_backends()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        top = subprocess.run(["top", "-bn1"], capture_output=True, text=True, timeout=10).stdout.splitlines()[:15]
    except (OSError, subprocess.SubprocessError):
        top = []
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "llama_system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gpu": bool(llama_cpp.llama_supports_gpu_offload()),
        "ggml_cpu_variant": backends.cpu_variant,
        "loadavg": os.getloadavg(),
        "top_at_start": top,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    cur = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def load_frames(n: int, tokens_per_frame: int) -> list:
    """``n`` real frames (1 s apart) from the street video, resized to the token budget as the session does."""
    from app.capture.resize import fit_frame
    from app.capture.video import VideoFileSource

    frames = []
    with VideoFileSource(VIDEO, realtime=False) as src:
        for f in src.sample(1.0):
            frames.append(fit_frame(f.image, tokens_per_frame))
            if len(frames) == n:
                break
    return frames


def tokens_of(frame) -> int:
    h, w = frame.shape[:2]
    return (h // 28) * (w // 28)


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timings_dict(t) -> dict:
    return {"vision_ms": t.vision_ms, "image_prefill_ms": t.image_prefill_ms, "prefill_ms": t.prefill_ms,
            "decode_ms": t.decode_ms, "total_ms": t.total_ms}


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in header]] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(widths[i]) for i, c in enumerate(r)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path


def model_pair(spec: str) -> tuple[Path, Path]:
    """``demo`` (the cached trained demo), a library name or a GGUF path → (model, mmproj)."""
    if spec == "demo":
        model = next(DEMO.glob("demo-*.gguf"), None)
        mmproj = next(DEMO.glob("mmproj-*.gguf"), None)
        if not model or not mmproj:
            raise SystemExit(f"no demo model under {DEMO}: run the engine tests once (they train it) or `duet train demo`")
        return model, mmproj
    from app.modelhub.library import resolve_model

    return resolve_model(spec)


def model_bench_parser(doc: str) -> argparse.ArgumentParser:
    """The parser a benchmark of one model starts from: its docstring's first line and ``--model``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default="demo", help="demo (the trained demo), a library name or a GGUF path")
    return ap


def start_model_bench(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict, Path, Path]:
    """The opening of every model benchmark: its arguments, the machine's facts, the model pair."""
    a = ap.parse_args()
    return (a, machine_info(), *model_pair(a.model))
