"""Peak memory of converting a checkpoint to GGUF: one tensor at a time (the converter) vs every tensor held
until the file is written (what gguf's ``GGUFWriter.add_tensor`` does, and the converter did before).

The model is bench/model_3b.py's random checkpoint of the real Qwen2.5-VL-3B shape (``--shape``), converted by
``app.modelhub.convert.convert`` at ``--outtype`` (f32: what ``duet train feedback`` exports before quantizing;
f16: what a pull converts to). Each way runs in its own child process, so each peak RSS (``ru_maxrss``) is its
own; "held" is the same converter with ``write_gguf`` made to take every tensor's data before writing any.
The GGUFs are written to ``.cache/bench-convert-memory`` and deleted after each run.

    nice -n 10 .venv/bin/python bench/convert_memory.py [--shape 3b|mid|quick] [--outtype f32|f16]

Writes ``bench/results/convert_memory[_<shape>].json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, machine_info, print_table, write_results  # noqa: E402

WORK = REPO / ".cache" / "bench-convert-memory"


def convert_once(shape: str, outtype: str, held: bool) -> dict:
    """One conversion in this process; its peak RSS, time and sizes."""
    import numpy as np

    from app.modelhub import convert as conv
    from app.modelhub import gguf_write
    from bench.model_3b import RandomCheckpoint, config_for, hf_shapes, write_hf_dir

    if held:  # gguf's add_tensor: every tensor made and kept before the file is written
        write = gguf_write.write_gguf

        def write_held(path, arch, kv, tensors):
            made = [gguf_write.PendingTensor.of(t.name, t.make(), t.qtype) for t in tensors]
            return write(path, arch, kv, made)

        conv.write_gguf = write_held
    work = WORK / f"{shape}-{outtype}-{'held' if held else 'streamed'}"
    shutil.rmtree(work, ignore_errors=True)
    cfg = config_for(shape)
    hf = write_hf_dir(cfg, work / "hf")
    shapes = hf_shapes(cfg)
    largest = max(int(np.prod(s)) for s in shapes.values()) * 4
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    res = conv.convert(hf, work, outtype=outtype, name="m", overwrite=True, checkpoint=RandomCheckpoint(shapes))
    seconds = time.perf_counter() - t0
    out = {"held": held, "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mib": base, "model_mib": res.model.stat().st_size / 2**20,
           "mmproj_mib": res.mmproj.stat().st_size / 2**20, "largest_tensor_f32_mib": largest / 2**20}
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="3b", choices=("3b", "mid", "quick"))
    ap.add_argument("--outtype", default="f32", choices=("f32", "f16"))
    ap.add_argument("--child", choices=("held", "streamed"), help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        Path(args.report).write_text(json.dumps(convert_once(args.shape, args.outtype, args.child == "held")))
        return 0
    result: dict = {"machine": machine_info(), "shape": args.shape, "outtype": args.outtype, "runs": {}}
    WORK.mkdir(parents=True, exist_ok=True)
    for way in ("streamed", "held"):
        report = WORK / f"{way}.json"
        print(f"{way} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--shape", args.shape, "--outtype", args.outtype, "--child", way,
                        "--report", str(report)], check=True)
        result["runs"][way] = json.loads(report.read_text())
    r = result["runs"]
    rows = [[way, f"{x['peak_rss_mib'] / 1024:.2f}", f"{x['seconds']:.0f}", f"{(x['model_mib'] + x['mmproj_mib']) / 1024:.2f}"]
            for way, x in r.items()]
    print_table(f"convert, {args.shape} shape → {args.outtype} (largest tensor {r['streamed']['largest_tensor_f32_mib']:.0f} "
                "MiB as f32)", ["tensors", "peak RSS GiB", "seconds", "GGUF pair GiB"], rows)
    result["peak_ratio_held_over_streamed"] = r["held"]["peak_rss_mib"] / r["streamed"]["peak_rss_mib"]
    print(f"held / streamed peak: {result['peak_ratio_held_over_streamed']:.2f}×")
    write_results("convert_memory" + ("" if args.shape == "3b" else f"_{args.shape}"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
