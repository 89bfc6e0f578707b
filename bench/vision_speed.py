"""The vision encoder's own speed: zero-padded MLP vs plain, F16 vs BF16 weights, flash attention on vs off.

Qwen2.5-VL's vision MLP is 3,420 wide (the 3B), not a multiple of the 16/32 floats ggml's tiled CPU matrix
multiply needs, so its down-projection ran on a row-by-row dot product. The converter now pads that width
with zeros (``app/modelhub/vision_pad.py``; exact, see the parity test). This script
converts one set of random weights three ways (F16 plain, as before; F16 padded, the default; BF16 padded,
``--outtype bf16``) and times ``mtmd_encode_chunk`` alone on the same
real frames, every variant once per round, round-robin, so that machine load hits all alike. It also checks
that the embeddings agree (relative to the plain F16 projector's).

    .venv/bin/python bench/vision_speed.py --shape mid          # 0.38 B, vision 8 blocks × 640; ~2 min
    .venv/bin/python bench/vision_speed.py --shape 3b --rounds 4 # the real 3B vision tower (32 × 1,280)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from app.core.config import usable_cores  # noqa: E402
from app.engine.llama_native import Chunks, Model, Projector, init_backend  # noqa: E402
from app.modelhub import convert as convert_mod  # noqa: E402
from app.modelhub import vision_pad  # noqa: E402
from bench._common import REPO, load_frames, machine_info, med, print_table, write_results  # noqa: E402
from bench.model_3b import RandomCheckpoint, build, hf_shapes  # noqa: E402

FA = {"off": 0, "on": 1}


def f16_mmproj(built: dict, work: Path, shape: str, padded: bool) -> Path:
    """The same weights as an F16 mmproj, padded or not (``VISION_FFN_MULTIPLE = 1``: the mmproj as before)."""
    out = work / "variants" / ("padded" if padded else "plain")
    saved = vision_pad.VISION_FFN_MULTIPLE
    vision_pad.VISION_FFN_MULTIPLE = saved if padded else 1
    try:
        res = convert_mod.convert(built["hf_dir"], out, outtype="f16", name=f"v-{shape}", overwrite=True,
                                  checkpoint=RandomCheckpoint(hf_shapes(built["config"])))
    finally:
        vision_pad.VISION_FFN_MULTIPLE = saved
    res.model.unlink()  # only the projector is compared; the text model is the BF16 build's
    return res.mmproj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["3b", "mid", "small"], default="mid")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens-per-frame", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the GGUF files (for hf_vs_engine.py --dtype bf16)")
    a = ap.parse_args()
    info = machine_info()
    threads = usable_cores()
    # The text model only hosts the projector here; the BF16 build is the one `hf_vs_engine.py --dtype bf16`
    # reuses (a 3B conversion takes minutes), so run this first with --keep when both are wanted.
    work = REPO / ".cache" / f"bench-hf-{a.shape}-bf16"
    t_all = time.perf_counter()
    built = build(a.shape, work, quant=None, outtype="bf16")
    v = built["config"]["vision_config"]
    print(f"vision tower: {v['depth']} blocks × {v['hidden_size']}, MLP {v['intermediate_size']} wide", flush=True)
    mmprojs = {"F16, plain": f16_mmproj(built, work, a.shape, padded=False),
               "F16, padded": f16_mmproj(built, work, a.shape, padded=True), "BF16, padded": built["mmproj"]}
    frames = load_frames(2 * a.rounds + 2, a.tokens_per_frame)
    init_backend()
    model = Model(built["f16"], n_gpu_layers=0)
    projs = {(m, fa): Projector(path, model, threads, use_gpu=False, flash_attn=FA[fa])
             for m, path in mmprojs.items() for fa in FA}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in projs}
    max_diff = 0.0
    try:
        for rnd in range(a.rounds + 1):  # round 0 warms up (pages weights in, first graph allocation)
            img = frames[rnd]
            outs = {}
            for key, proj in projs.items():
                with Chunks(proj, f"{proj.marker}", [img]) as ch:
                    i = next(j for j, c in enumerate(ch.info) if c.is_image)
                    t0 = time.perf_counter()
                    outs[key] = ch.encode_image(i)
                    if rnd:
                        times[key].append((time.perf_counter() - t0) * 1e3)
            ref = outs[("F16, plain", "off")]
            scale = float(np.abs(ref).max())
            max_diff = max(max_diff, *(float(np.abs(o - ref).max()) / scale for o in outs.values()))
    finally:
        for p in projs.values():
            p.close()
        model.close()
        shutil.rmtree(work / "variants", ignore_errors=True)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = med(times[("F16, plain", "off")])
    rows = [[m, fa, med(ts), base / med(ts)] for (m, fa), ts in times.items()]
    print_table(f"vision encoder per frame ({frames[0].shape[1]}×{frames[0].shape[0]} px), {a.shape} shape, "
                f"{threads} threads, median of {a.rounds} rounds (ms)",
                ["mmproj, MLP", "flash attention", "encode ms", "× the F16 plain/off speed"], rows)
    print(f"largest |Δ embedding| between variants, relative to the largest value: {max_diff:.1e}")
    write_results(f"vision_speed_{a.shape}", {
        "machine": info, "shape": a.shape, "vision_config": v, "threads": threads, "rounds": a.rounds,
        "frame_px": list(frames[0].shape[:2]), "mlp_width": {"plain": v["intermediate_size"],
                                                            "padded": convert_mod.QwenVLConfig.from_dict(
                                                                built["config"]).v_ffn_padded},
        "ms": {f"{m}/{fa}": ts for (m, fa), ts in times.items()},
        "median_ms": {f"{m}/{fa}": med(ts) for (m, fa), ts in times.items()},
        "max_rel_embedding_diff": max_diff, "seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
