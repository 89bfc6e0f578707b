"""``duet models``: pull, convert, quantize, build the tiny model, list, import, remove, recommend."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.core.sizes import human_bytes as _human_bytes
from app.core.timefmt import clock as _fmt_time


def cmd_models_convert(a: argparse.Namespace) -> int:
    from app.modelhub.convert import convert

    r = convert(a.hf_dir, a.out, outtype=a.outtype, name=a.name, overwrite=a.overwrite)
    print(f"model:  {r.model} ({r.model.stat().st_size / 1e6:.1f} MB)")
    print(f"mmproj: {r.mmproj} ({r.mmproj.stat().st_size / 1e6:.1f} MB)")
    print(f"{r.n_tensors} tensors in {r.seconds:.1f} s")
    return 0


def cmd_models_quantize(a: argparse.Namespace) -> int:
    from app.modelhub.quantize import quantize

    r = quantize(a.input, a.type, a.out, overwrite=a.overwrite, threads=a.threads)
    print(f"{r.path}: {r.size_in / 1e6:.1f} MB → {r.size_out / 1e6:.1f} MB")
    if r.fallbacks:
        print(f"{len(r.fallbacks)} tensor(s) are narrower than a K-quant block (256) and use llama.cpp's "
              f"fallback type: {', '.join(r.fallbacks[:6])}{' …' if len(r.fallbacks) > 6 else ''}")
    return 0


def cmd_models_tiny(a: argparse.Namespace) -> int:
    from app.modelhub.tiny import TinySpec, build_tiny

    t = build_tiny(TinySpec(seed=a.seed), Path(a.out) if a.out else None, force=a.force)
    print(f"hf:     {t.hf_dir}\nmodel:  {t.model}\nmmproj: {t.mmproj}")
    return 0


def cmd_models_list(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary
    from app.modelhub.validate import ModelFileError

    lib = ModelLibrary()
    problem = lib.root_problem()
    if problem:  # not "the library is empty": it cannot exist where it is
        raise ModelFileError(problem)
    entries = lib.entries()
    if not entries:
        print("The library is empty. Import a pair with `duet models import NAME MODEL.gguf MMPROJ.gguf`.")
    for e in entries:
        print(f"{e.name:24s} {e.source:10s} {e.model}")
    return 0


def cmd_models_import(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary

    e = ModelLibrary().add(a.name, a.model, a.mmproj, copy=not a.link)
    print(f"added {e.name}: {e.model}")
    return 0


def cmd_models_pull(a: argparse.Namespace) -> int:
    from app.modelhub import hardware
    from app.modelhub.pull import PullEvent, PullJob

    tty = sys.stderr.isatty()
    last_line = [0.0]

    def show(ev: PullEvent) -> None:
        import time

        if a.json:
            print(json.dumps(ev.to_json()), flush=True)
            return
        if ev.stage == "download" and ev.total:
            now = time.monotonic()  # a log (not a terminal) gets a line every 5 s, not every update
            if not tty and now - last_line[0] < 5 and ev.done < ev.total:
                return
            last_line[0] = now
            pct = 100 * ev.done / ev.total
            eta = _fmt_time(ev.eta) if ev.eta is not None else "--:--"
            line = (f"{ev.stage:9s} {pct:5.1f}%  {_human_bytes(ev.done)} / {_human_bytes(ev.total)}  "
                    f"{_human_bytes(ev.rate)}/s  ETA {eta}")
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            if ev.done >= ev.total and tty:
                print(file=sys.stderr)
            return
        print(f"{ev.stage:9s} {ev.message}", file=sys.stderr, flush=True)

    if not a.json:
        hw = hardware.detect()
        rec = hardware.recommend(hw)
        print(f"this machine: {'; '.join(hardware.describe(hw))}", file=sys.stderr)
        print(f"recommended:  {rec.quant} on {rec.device}" + ("" if a.quant else f" (pulling {rec.quant})"),
              file=sys.stderr)
    quant = a.quant or hardware.recommend(hardware.detect()).quant
    job = PullJob(a.repo, revision=a.revision, quant=quant, name=a.name, keep_intermediate=a.keep_intermediate,
                  progress=show, threads=a.threads, projector=a.projector)
    entry = job.run()
    print(f"added {entry.name}: {entry.model}")
    return 0


def cmd_models_recommend(a: argparse.Namespace) -> int:
    from app.modelhub import hardware

    hw = hardware.detect()
    rec = hardware.recommend(hw, main_gpu=a.gpu)
    if a.json:
        print(json.dumps({"hardware": hw.to_json(), "recommendation": rec.to_json()}, indent=2))
        return 0
    for line in hardware.describe(hw):
        print(line)
    print(f"\nMMDuet2 on this machine: {rec.quant} on {rec.device}"
          + ("" if rec.fits else " (does NOT fit; see below)"))
    flags = f"--gpu-layers {rec.gpu_layers} --tokens-per-frame {rec.tokens_per_frame} --interval {rec.interval:g}"
    if rec.main_gpu >= 0:
        flags += f" --gpu {rec.main_gpu}"
    print(f"  duet models pull wangyueqian/MMDuet2 --quant {rec.quant}")
    print(f"  duet run --model mmduet2-{rec.quant.lower()} {flags} --source …")
    for r in rec.reasons:
        print(f"  · {r}")
    return 0


def cmd_models_remove(a: argparse.Namespace) -> int:
    from app.modelhub.library import ModelLibrary

    ModelLibrary().remove(a.name, delete_files=not a.keep_files)
    print(f"removed {a.name}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``models`` and its actions on the ``duet`` command's sub-parsers."""
    group = subparsers.add_parser("models", help="pull, convert, quantize, list, import and remove models")
    m = group.add_subparsers(dest="action", required=True)
    c = m.add_parser("convert", help="Hugging Face Qwen2.5-VL checkpoint → GGUF + mmproj")
    c.add_argument("hf_dir")
    c.add_argument("--out", required=True)
    c.add_argument("--outtype", choices=["f32", "f16", "bf16"], default="f16")
    c.add_argument("--name")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_models_convert)
    q = m.add_parser("quantize", help="quantize a GGUF with llama.cpp")
    q.add_argument("input")
    q.add_argument("--type", required=True, help="Q4_K_M, Q5_K_M, Q8_0, …")
    q.add_argument("--out")
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_models_quantize)
    t = m.add_parser("tiny", help="build the tiny random test model")
    t.add_argument("--out")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true")
    t.set_defaults(func=cmd_models_tiny)
    ls = m.add_parser("list", help="models in the local library")
    ls.set_defaults(func=cmd_models_list)
    im = m.add_parser("import", help="add a GGUF + mmproj pair to the library (validated)")
    im.add_argument("name")
    im.add_argument("model")
    im.add_argument("mmproj")
    im.add_argument("--link", action="store_true", help="record the paths instead of copying the files")
    im.set_defaults(func=cmd_models_import)
    pl = m.add_parser("pull", help="download a model from Hugging Face, verify, convert, quantize and add it")
    pl.add_argument("repo", help="owner/name, e.g. wangyueqian/MMDuet2 (or a repository of GGUF + mmproj files)")
    pl.add_argument("--revision", default="main", help="branch, tag or commit")
    pl.add_argument("--quant", type=str.upper, choices=["Q4_K_M", "Q5_K_M", "Q8_0", "F16"],
                    help="quantization (default: the one recommended for this machine)")
    pl.add_argument("--name", help="library name (default: <repo name>-<quant>)")
    pl.add_argument("--keep-intermediate", action="store_true",
                    help="keep the downloaded checkpoint and the F16 GGUF (default: delete them once imported)")
    pl.add_argument("--threads", type=int, default=0, help="quantizer threads (0 = automatic)")
    pl.add_argument("--projector", choices=["auto", "f16", "bf16"], default="auto",
                    help="the vision projector's type when the checkpoint is converted (auto: bf16 when no GPU is "
                         "usable and the CPU multiplies BF16 natively, which encodes frames faster; else f16)")
    pl.add_argument("--json", action="store_true", help="progress as one JSON object a line (for programs)")
    pl.set_defaults(func=cmd_models_pull)
    rc = m.add_parser("recommend", help="this machine's GPUs, RAM and cores, and the settings for MMDuet2")
    from app.core.config import BACKEND_FLAGS, BackendSettings, add_arguments

    add_arguments(rc, BackendSettings, ("gpu",), BACKEND_FLAGS)  # consider only this GPU: the number run/serve take
    rc.add_argument("--json", action="store_true")
    rc.set_defaults(func=cmd_models_recommend)
    rm = m.add_parser("remove", help="remove a model from the library (and its files)")
    rm.add_argument("name")
    rm.add_argument("--keep-files", action="store_true")
    rm.set_defaults(func=cmd_models_remove)
