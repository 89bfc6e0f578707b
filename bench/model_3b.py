"""Per-step latency of a model of the real Qwen2.5-VL-3B shape (random weights) on this CPU.

Speed does not depend on weight values, so the model is the real 3B architecture (REAL_3B from
tests/modelhub/test_real_3b_plan.py) with seeded random weights generated tensor by tensor while
converting (nothing is written as safetensors), the tiny model's tokenizer padded to 151,936 ids,
F16 GGUF → Q4_K_M text model, F16 mmproj. Then LlamaBackend steps at 128 and 64 tokens per frame,
2 frames per turn, and one forced reply to time decoding per token.

    .venv/bin/python bench/model_3b.py [--quick] [--keep]

``--quick`` builds a small model of the same layout (2 layers, 4 vision blocks, width 256, 1,024 ids): a
smoke test of the pipeline whose timings say nothing about the 3B. The multi-GB files are deleted at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from app.core import protocol  # noqa: E402
from app.modelhub.convert import convert  # noqa: E402
from app.modelhub.quantize import quantize  # noqa: E402
from app.modelhub.tiny import build_tiny, write_processor_files  # noqa: E402
from bench._common import (  # noqa: E402
    REPO,
    load_frames,
    machine_info,
    med,
    print_table,
    rss_mib,
    timings_dict,
    tokens_of,
    write_results,
)
from tests.modelhub.test_real_3b_plan import REAL_3B  # noqa: E402

if TYPE_CHECKING:  # llama.cpp is imported where it runs: `--prepare` needs none (bench/gpu.sh runs it mid-build)
    from app.engine.llama_backend import LlamaBackend

WORK = REPO / ".cache" / "bench-3b"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


class RandomCheckpoint:
    """The ``SafetensorsCheckpoint`` interface over seeded random tensors (float32, N(0, std²); norms = 1)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], seed: int = 0, std: float = 0.02) -> None:
        self.tensors = {n: SimpleNamespace(shape=tuple(s)) for n, s in shapes.items()}
        self.seed, self.std = seed, std

    def load(self, name: str) -> np.ndarray:
        shape = self.tensors[name].shape
        if name.endswith(".weight") and ("norm" in name or "ln_q" in name):
            return np.ones(shape, np.float32)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= self.std
        return a

    def close(self) -> None:
        pass


def config_for(quick: bool | str) -> dict:
    """The model's config: ``False``/"3b" the real 3B; ``True``/"quick" a smoke-test model of the same layout;
    "mid" the 3B's layout at about a seventh of its compute (same head sizes and vocabulary, a quarter
    of the layers), for runs the 3B makes too slow on a small CPU (100-turn streams)."""
    shape = {True: "quick", False: "3b"}.get(quick, quick)
    cfg = json.loads(json.dumps(REAL_3B))
    if shape in ("quick", "small"):  # same layout, small: a smoke test of build → quantize → step, nothing more
        cfg |= {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 2,
                "vocab_size": 1024 if shape == "quick" else cfg["vocab_size"]}  # small: transformers needs the ids
        cfg["vision_config"] |= {"depth": 4, "fullatt_block_indexes": [1, 3], "hidden_size": 256,
                                 "intermediate_size": 512, "num_heads": 4, "out_hidden_size": 256}
    elif shape == "mid":
        cfg |= {"num_hidden_layers": 9, "hidden_size": 1024, "intermediate_size": 5504, "num_attention_heads": 8}
        cfg["vision_config"] |= {"depth": 8, "fullatt_block_indexes": [3, 7], "hidden_size": 640,
                                 "intermediate_size": 1710, "num_heads": 8, "out_hidden_size": 1024}
    elif shape != "3b":
        raise ValueError(f"unknown shape {shape!r}")
    return cfg


def hf_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the HF model, from a meta-device instance (no memory)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    return {n: tuple(t.shape) for n, t in model.state_dict().items()}


def write_hf_dir(cfg: dict, hf: Path) -> Path:
    """An HF folder without weights: ``cfg`` as config.json, the tiny model's tokenizer, processor files.
    The converter reads its config and vocabulary; the weights come from a :class:`RandomCheckpoint`."""
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(cfg, indent=2))
    tiny = build_tiny()
    for f in TOKENIZER_FILES:
        if (tiny.hf_dir / f).exists():
            shutil.copy(tiny.hf_dir / f, hf / f)
    write_processor_files(hf, max_pixels=128 * 28 * 28)
    return hf


def _reuse(work: Path, cfg_key: str) -> dict | None:
    """The record of an earlier ``build`` in ``work`` of the same config whose files are all still there, else None.
    A 3B conversion takes minutes; a GPU run (``bench/gpu.sh``) converts while the CUDA wheel compiles and the
    benchmarks after it reuse the files."""
    try:
        rec = json.loads((work / "built.json").read_text())
    except (OSError, ValueError):
        return None
    if rec.get("config_key") != cfg_key or rec.get("code") != codekey_of_build():
        return None
    paths = [rec[k] for k in ("f16", "mmproj", "hf_dir", "q4") if k in rec]
    if not all(Path(x).exists() for x in paths):
        return None
    return rec | {k: Path(rec[k]) for k in ("f16", "mmproj", "hf_dir", "q4") if k in rec}


def codekey_of_build() -> str:
    """Files made by older converter/quantizer code are not reused (see app/core/codekey.py)."""
    from app.core.codekey import code_key

    return code_key("app.modelhub.convert", "app.modelhub.quantize", "bench.model_3b")


def _record(work: Path, out: dict, cfg_key: str) -> None:
    rec = {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}
    rec |= {"code": codekey_of_build(), "config_key": cfg_key}
    (work / "built.json").write_text(json.dumps(rec, indent=1))


def build(quick: bool | str, work: Path, quant: str | None = "Q4_K_M", outtype: str = "f16") -> dict:
    """Write the random model as GGUF (``outtype`` text + mmproj, then ``quant`` of the text model unless
    None); the unquantized text model is ``["f16"]`` whatever ``outtype`` is. Files of an earlier build of the
    same config, outtype and code in ``work`` are reused (``convert_s`` then says 0)."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = config_for(quick)
    # before transformers adds its defaults to the dict in place
    cfg_key = json.dumps(cfg, sort_keys=True) + ("" if outtype == "f16" else f" {outtype}")
    done = _reuse(work, cfg_key)
    if done is not None:
        done["sizes_mib"] = dict(done["sizes_mib"])
        print(f"  reusing the model built earlier in {work}", flush=True)
        out = done | {"convert_s": 0.0, "reused": True}
        if quant and "q4" not in done:
            t0 = time.perf_counter()
            q = quantize(done["f16"], quant, overwrite=True)
            out |= {"q4": q.path, "quantize_s": time.perf_counter() - t0, "q4_fallbacks": len(q.fallbacks)}
            out["sizes_mib"]["text_q4_k_m"] = q.path.stat().st_size / 2**20
            _record(work, out, cfg_key)
        return out
    hf = write_hf_dir(cfg, work / "hf")
    shapes = hf_shapes(cfg)
    n_params = sum(int(np.prod(s)) for n, s in shapes.items() if n != "lm_head.weight")
    name = {False: "rand3b", True: "rand3b-quick"}.get(quick, f"rand-{quick}")
    t0 = time.perf_counter()
    res = convert(hf, work, outtype=outtype, name=name, overwrite=True, checkpoint=RandomCheckpoint(shapes))
    t_conv = time.perf_counter() - t0
    sizes = {f"text_{outtype}": res.model.stat().st_size / 2**20, "mmproj_f16": res.mmproj.stat().st_size / 2**20}
    out = {"config": cfg, "n_params": n_params, "f16": res.model, "mmproj": res.mmproj, "convert_s": t_conv,
           "hf_dir": hf, "sizes_mib": sizes}
    if quant:
        t0 = time.perf_counter()
        q = quantize(res.model, quant, overwrite=True)
        out |= {"q4": q.path, "quantize_s": time.perf_counter() - t0, "q4_fallbacks": len(q.fallbacks)}
        sizes["text_q4_k_m"] = q.path.stat().st_size / 2**20
    _record(work, out, cfg_key)
    return out


def one_step(b: LlamaBackend, imgs, label: str) -> dict:
    cells0 = b.n_cells
    t0 = time.perf_counter()
    r = b.step(imgs, "", talkativeness=-30.0, max_new_tokens=8)
    wall = (time.perf_counter() - t0) * 1e3
    t = r.timings
    print(f"    {label}: {wall / 1e3:.1f} s ({t.describe()}) {r.text!r}", flush=True)
    return {"wall_ms": wall, **timings_dict(r.timings), "silent": r.silent, "text": r.text,
            "new_cells": r.kv_cells - cells0}


def run_interleaved(backends: dict[str, LlamaBackend], frames: dict[int, list], n_steps: int) -> dict:
    """A warm-up step per backend (system prompt + first turn; pages the weights in), then ``n_steps`` rounds
    of one silent step per frame size and backend, alternating so that all see the same machine load.
    Returns ``{backend name: {"warmup": …, size: {…}}}``."""
    sizes = list(frames)
    out: dict[str, dict] = {}
    for name, b in backends.items():
        b.reset(protocol.SYSTEM_PROMPT)
        out[name] = {"warmup": one_step(b, frames[sizes[0]][:2], f"{name}: warm-up")}
    steps = {name: {k: [] for k in sizes} for name in backends}
    for rep in range(n_steps):
        for k in sizes:
            for name, b in backends.items():
                steps[name][k].append(one_step(b, frames[k][2 * rep + 2:2 * rep + 4],
                                               f"{name}: {k} tokens/frame, step {rep + 1}"))
    for name in backends:
        for k in sizes:
            st = steps[name][k]
            out[name][k] = {"steps": st, "frame_px": list(frames[k][0].shape[:2]),
                            "tokens_per_frame": tokens_of(frames[k][0]),
                            "median": {m: med([s[m] for s in st]) for m in ("wall_ms", "vision_ms", "image_prefill_ms",
                                                                            "prefill_ms", "decode_ms")}}
    return out


def forced_reply(b: LlamaBackend, frames, n_tokens: int) -> dict:
    """One must-reply step: decode ms per token (every sampled token but the last evaluated once)."""
    cells0 = b.n_cells
    r = b.step(frames[:2], "", must_reply=True, max_new_tokens=n_tokens)
    # Tokens evaluated: the sampled ones (≤ n_tokens). Their re-tokenized text can be longer (a random model
    # samples non-canonical splits, which the engine then replaces), so cap the count at n_tokens.
    n = min(len(b.model.tokenize(r.text, parse_special=False)), n_tokens)
    return {"text": r.text, "tokens": n, **timings_dict(r.timings), "new_cells": b.n_cells - cells0,
            "decode_ms_per_token": r.timings.decode_ms / max(1, n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small-model smoke test of the pipeline (< 1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the GGUF files under .cache/bench-3b[-quick]")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per frame size (after one warm-up)")
    ap.add_argument("--with-chunked", action="store_true",
                    help="also step an engine that evaluates each turn chunk by chunk (one_pass=False), interleaved")
    ap.add_argument("--with-bf16-projector", action="store_true",
                    help="also step the same Q4_K_M text model with the projector converted to BF16 (what `duet models "
                         "pull` makes on a CPU with native BF16), interleaved")
    ap.add_argument("--gpu", action="store_true", help="offload every layer and the projector (needs a GPU build)")
    ap.add_argument("--prepare", action="store_true",
                    help="only convert the random model to F16 GGUF in .cache/bench-3b (no llama.cpp needed; a later "
                         "run reuses it): bench/gpu.sh does this while the CUDA wheel compiles")
    args = ap.parse_args()
    q = args.quick
    work = WORK.with_name(WORK.name + "-quick") if q else WORK
    if args.prepare:
        built = build(q, work, quant=None)
        print(f"  {built['n_params'] / 1e9:.2f} B parameters; convert {built['convert_s']:.0f} s; sizes MiB "
              f"{built['sizes_mib']}", flush=True)
        return
    from app.engine.llama_backend import LlamaBackend, LlamaSettings

    info = machine_info()
    n_steps = 1 if q else args.steps
    t_all = time.perf_counter()
    try:
        print("building the random model…", flush=True)
        built = build(q, work)
        print(f"  {built['n_params'] / 1e9:.2f} B parameters; convert {built['convert_s']:.0f} s, quantize "
              f"{built.get('quantize_s', 0):.0f} s; sizes MiB {built['sizes_mib']}", flush=True)
        layers = -1 if args.gpu else 0
        settings = LlamaSettings(n_ctx=4096, n_gpu_layers=layers, embed_cache_mib=0)
        b = LlamaBackend(built["q4"], built["mmproj"], settings)
        backends = {"one pass": b}
        if args.with_bf16_projector:
            from app.modelhub.convert import convert

            hf = Path(built["hf_dir"])
            conv = convert(hf, work / "bf16-projector", outtype="f16", mmproj_outtype="bf16", name="rand3b",
                          overwrite=True, checkpoint=RandomCheckpoint(hf_shapes(json.loads((hf / "config.json").read_text()))))
            conv.model.unlink()  # only its projector is used: the same weights as built["mmproj"], in BF16
            backends["BF16 projector"] = LlamaBackend(built["q4"], conv.mmproj, settings)
        if args.with_chunked:
            backends["chunk by chunk"] = LlamaBackend(built["q4"], built["mmproj"],
                                                      dataclasses.replace(settings, one_pass=False))
        print(f"  device: {b.device}", flush=True)
        device = b.device
        frames = {tpf: load_frames(2 * (n_steps + 1), tpf) for tpf in (128, 64)}
        for tpf, fr_ in frames.items():
            print(f"  {tpf} tokens/frame budget → {fr_[0].shape[1]}×{fr_[0].shape[0]} px = {tokens_of(fr_[0])} tokens")
        res = run_interleaved(backends, frames, n_steps)
        per_tpf = {k: res["one pass"][k] for k in frames}
        fr = forced_reply(b, load_frames(2, 128), 4 if q else 8)
        print(f"  forced reply: {fr['tokens']} tokens, {fr['decode_ms_per_token']:.0f} ms/token", flush=True)
        cur, peak = rss_mib()
        for other in backends.values():
            other.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = []
    for name in backends:
        for tpf in frames:
            r = res[name][tpf]
            m = r["median"]
            new_cells = med([st["new_cells"] for st in r["steps"]])
            prefill_tps = new_cells / max(1e-9, (m["image_prefill_ms"] + m["prefill_ms"]) / 1e3)
            rows.append([f"{tpf} ({r['tokens_per_frame']})", name, m["wall_ms"] / 1e3, m["vision_ms"] / 1e3,
                         (m["image_prefill_ms"] + m["prefill_ms"]) / 1e3, m["decode_ms"] / 1e3, prefill_tps,
                         m["wall_ms"] / 1e3 / 2.0])
    print_table(f"per-step latency, {'QUICK small model' if q else 'Qwen2.5-VL-3B shape'}, Q4_K_M text + F16 "
                f"mmproj, 2 frames/turn, median of {n_steps} silent steps (seconds)",
                ["tokens/frame", "variant", "step", "vision encoder", "text model over the turn", "decode",
                 "prefill tokens/s", "step / 2 s video"], rows)
    print(f"device: {device}")
    print(f"forced reply decode: {fr['decode_ms_per_token']:.0f} ms/token = "
          f"{1e3 / max(1e-9, fr['decode_ms_per_token']):.1f} tokens/s ({fr['tokens']} tokens); "
          f"NO REPLY decoded token by token would add ≈ {2 * fr['decode_ms_per_token']:.0f} ms to a silent step")
    print(f"sizes MiB: {built['sizes_mib']}; RSS {cur:.0f} MiB (peak {peak:.0f})")
    built_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in built.items()}
    write_results("model_3b" + ("_quick" if q else "") + ("_gpu" if args.gpu else "")
                  + ("_bf16_projector" if args.with_bf16_projector else ""),
                  {"machine": info, "quick": q, "build": built_json, "steps_per_size": n_steps,
                   "warmup_step": res["one pass"]["warmup"], "device": device,
                   "settings": f"LlamaSettings(n_ctx=4096, n_gpu_layers={layers}, embed_cache_mib=0), other defaults (n_threads=0 → the usable "
                               "cores, flash_attn auto); talkativeness -30",
                   "per_tokens_per_frame": {str(k): v for k, v in per_tpf.items()}, "forced_reply": fr,
                   "chunked_per_tokens_per_frame": ({str(k): res["chunk by chunk"][k] for k in frames}
                                                    if args.with_chunked else None),
                   "bf16_projector_per_tokens_per_frame": ({str(k): res["BF16 projector"][k] for k in frames}
                                                           if args.with_bf16_projector else None),
                   "rss_mib": cur, "peak_rss_mib": peak, "seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
