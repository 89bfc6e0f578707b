"""The portable llama.cpp build against a -march=native build of the same sources, side by side.

Both wheels come from ``installer/build_llama.py`` (the native one with ``--native``: this machine's
instruction set, AMX off). Each round runs a fresh process per build, alternating, that loads the model
and times silent steps (encode + prefill, the bulk of a step) with the same frames; the figure is the
median step per build and their ratio. Also reported: each wheel's size and which CPU library the
portable build chose here.

    .venv/bin/python installer/build_llama.py --native --no-install      # once (cached)
    .venv/bin/python bench/portable_vs_native.py [--model demo] [--rounds 4] [--turns 12]

Writes bench/results/portable_vs_native.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, machine_info, print_table, write_results  # noqa: E402

CHILD = r"""
import json, sys, time
from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.modelhub.library import resolve_model
from app.modelhub.llama_lib import load_backends
from bench._common import load_frames
model, mmproj = resolve_model(sys.argv[1])
turns = int(sys.argv[2])
frames = load_frames(2 * turns, 128)
info = load_backends()
be = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=8192, n_gpu_layers=0))
be.reset(protocol.SYSTEM_PROMPT)
ms = []
for i in range(turns):
    t0 = time.perf_counter()
    be.step(frames[2 * i:2 * i + 2], "", talkativeness=-50.0)
    ms.append((time.perf_counter() - t0) * 1000)
be.close()
print(json.dumps({"ms": ms[2:], "cpu_variant": info.cpu_variant}))
"""


def wheel_for(native: bool) -> Path:
    cmd = [sys.executable, str(REPO / "installer" / "build_llama.py"), "--print-path"] + (["--native"] if native else [])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    if not out:
        raise SystemExit(f"no cached {'native' if native else 'portable'} wheel: run "
                         f"installer/build_llama.py{' --native' if native else ''} --no-install first")
    return Path(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--turns", type=int, default=12)
    a = ap.parse_args()
    wheels = {"portable": wheel_for(False), "native": wheel_for(True)}
    results: dict[str, dict] = {k: {"ms": [], "wheel": str(w), "wheel_mib": w.stat().st_size / 2**20}
                                for k, w in wheels.items()}
    with tempfile.TemporaryDirectory(prefix="duet-pvn-") as tmp:
        roots = {}
        for k, w in wheels.items():
            roots[k] = Path(tmp) / k
            with zipfile.ZipFile(w) as z:
                z.extractall(roots[k])
            results[k]["installed_mib"] = sum(p.stat().st_size for p in (roots[k] / "llama_cpp").rglob("*")
                                              if p.is_file()) / 2**20
        for r in range(a.rounds):
            for k in (("portable", "native") if r % 2 == 0 else ("native", "portable")):
                env = {"PYTHONPATH": f"{roots[k]}:{REPO}", "PATH": "/usr/bin:/bin"}
                p = subprocess.run([sys.executable, "-c", CHILD, a.model, str(a.turns)], capture_output=True,
                                   text=True, env=env, cwd=REPO, timeout=1800)
                if p.returncode != 0:
                    raise SystemExit(f"{k} run failed ({p.returncode}):\n{p.stderr[-2000:]}")
                got = json.loads(p.stdout.strip().splitlines()[-1])
                results[k]["ms"] += got["ms"]
                results[k]["cpu_variant"] = got["cpu_variant"]
    for k in results:
        results[k]["median_ms"] = statistics.median(results[k]["ms"])
    ratio = results["portable"]["median_ms"] / results["native"]["median_ms"]
    print_table(f"{a.model}: silent steps (2 frames × 128 tokens), {a.rounds} alternating rounds",
                ["build", "CPU library", "median step ms", "wheel MiB", "installed MiB"],
                [[k, v["cpu_variant"], v["median_ms"], v["wheel_mib"], v["installed_mib"]] for k, v in results.items()])
    print(f"\nportable / native step time: {ratio:.3f}")
    write_results("portable_vs_native", {"machine": machine_info(), "model": a.model, "ratio": ratio,
                                         "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
