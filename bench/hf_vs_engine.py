"""This engine vs the official demo's way (transformers, ``past_key_values`` kept across turns), same weights.

The official MMDuet2 demo runs Qwen2.5-VL in transformers and keeps the KV cache (``past_key_values``)
from turn to turn, feeding each new user turn (frames + text) on top of it. This script does the same
with a transformers model holding exactly the random weights the engine's GGUF was converted from
(``bench/model_3b.py``'s ``RandomCheckpoint``), and steps both on the same real frames, turn by turn,
**interleaved** (engine turn n, then transformers turn n) so machine load hits both alike.

Both follow a silent stream (no turn speaks, as most turns of a real stream do): the engine decides
under talkativeness −30 (``NO REPLY``, or an empty turn when a random model's first token is
``<|im_end|>``), and transformers follows the same text. The demo calls ``generate()`` every turn, so a
silent turn there is the prefill *and* ``NO REPLY`` decoded token by token (one forward per token, the
``<|im_end|>`` that ends it needs none); transformers does that here (``HFStream.decode``), timed apart, so
each run reports the ratio against the demo's whole step and against its prefill alone (the like-for-like
share of the work; ``--hf-prefill-only`` skips the decoding). The engine decides silence from the first
token's logits and evaluates ``NO REPLY<|im_end|>`` at the head of the next turn's batch. What is compared each turn, from each side's own first-token logits (unsayable ids masked on
both): the silent/speak decision at talkativeness 0 and the top-1 first token.

Transformers' own M-RoPE bookkeeping is wrong for images after the first turn when a cache is kept
(it reuses the first prefill's rope delta), so positions are computed per turn with the model's
``get_rope_index`` and offset by the positions used so far — which is what the demo must do too.

    .venv/bin/python bench/hf_vs_engine.py --shape mid --turns 100      # ~0.5 B model, 100 turns
    .venv/bin/python bench/hf_vs_engine.py --quick                       # smoke test, < 2 min
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from app.core import protocol  # noqa: E402
from app.core.config import usable_cores  # noqa: E402
from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from bench._common import REPO, load_frames, machine_info, med, print_table, rss_mib, write_results  # noqa: E402
from bench.model_3b import WORK as MODEL_3B_WORK  # noqa: E402
from bench.model_3b import RandomCheckpoint, build  # noqa: E402

QUIET = -30.0


class HFStream:
    """The demo's way: one transformers model, one DynamicCache kept across turns."""

    def __init__(self, hf_dir: Path, cfg: dict, threads: int, device: str = "cpu", bf16: bool = False) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        from app.modelhub.hf_reference import HFReference

        torch.set_num_threads(threads)
        self.torch = torch
        tok = AutoTokenizer.from_pretrained(hf_dir)
        # The benchmark's tokenizer is the tiny model's (padded to the 3B vocabulary): its special-token ids
        # are not the 3B's. libmtmd never looks at them; transformers finds image slots by them.
        ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("image_token_id", "<|image_pad|>"),
               ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
               ("vision_end_token_id", "<|vision_end|>"))}
        # On a GPU the demo's way is bfloat16 (the official demo's dtype); on the CPU float32 unless asked.
        self.device, self.dtype = device, (torch.bfloat16 if device != "cpu" or bf16 else torch.float32)
        from transformers.initialization import no_init_weights

        # Built straight in the target dtype without a random init (the 3B in float32 is 15 GiB and its
        # init takes minutes), then filled tensor by tensor with the seeded values the GGUF was written
        # from: the peak is the model plus one tensor, so the 3B in bfloat16 fits beside the engine.
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(device), no_init_weights():
                model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**(cfg | ids))).eval()
        finally:
            torch.set_default_dtype(default)
        params = model.state_dict()
        ck = RandomCheckpoint({n: tuple(t.shape) for n, t in params.items()})
        with torch.no_grad():
            for n, t in params.items():
                if n != "lm_head.weight":
                    t.copy_(torch.from_numpy(ck.load(n)))  # float32 → the model's dtype, round to nearest even
        model.tie_weights()  # the 3B ties lm_head to the embeddings, as the converter assumes
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
        # HFReference's tokenizer and image processor (the PIL one), around this in-memory model.
        ref = HFReference.__new__(HFReference)
        ref.torch = torch
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        ref.tokenizer = tok
        ref.image_processor = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
        ref.model = model
        ref.image_token_id = model.config.image_token_id
        self.ref, self.model = ref, model
        # The vision tower's own time, as the engine's StepTimings.vision_ms (hooks cost microseconds; on a GPU,
        # whose kernels run asynchronously, it is launch time only).
        self.vision_ms = 0.0
        visual = model.model.visual
        visual.register_forward_pre_hook(lambda *_: setattr(self, "_v0", time.perf_counter()))
        visual.register_forward_hook(lambda *_: setattr(
            self, "vision_ms", self.vision_ms + (time.perf_counter() - self._v0) * 1e3))
        self.cache_kw = "cache"  # transformers ≥ 5.x; `past_key_values` is its deprecated name
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.next_pos = 0

    def step(self, images: list[np.ndarray], tail: str) -> tuple[np.ndarray, float, int]:
        """One turn on top of the cache, headed by the previous turn's ``tail``; returns (first-token logits,
        ms, tokens fed)."""
        from app.modelhub.hf_reference import MARKER

        torch = self.torch
        self.vision_ms = 0.0
        t0 = time.perf_counter()
        text = tail + protocol.user_turn(len(images), "", MARKER) + protocol.assistant_prefix(False)
        inp = {k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device))
               for k, v in self.ref.inputs(text, images).items()}
        ids = inp["input_ids"]
        with torch.no_grad():
            pos, _ = self.model.model.get_rope_index(ids, mm_token_type_ids=inp["mm_token_type_ids"],
                                                     image_grid_thw=inp.get("image_grid_thw"),
                                                     attention_mask=inp["attention_mask"])
            pos = pos + self.next_pos
            out = self.model(input_ids=ids, pixel_values=inp.get("pixel_values"),
                             image_grid_thw=inp.get("image_grid_thw"), position_ids=pos, use_cache=True,
                             logits_to_keep=1,  # what generate() passes: the last position's logits only
                             **{self.cache_kw: self.cache})
        self.cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else self.cache
        self.next_pos = int(pos.max()) + 1
        logits = out.logits[0, -1].float().cpu().numpy()  # .cpu() waits for the GPU: the time below is whole
        return logits, (time.perf_counter() - t0) * 1e3, int(ids.shape[1])

    def decode(self, text: str) -> float:
        """What ``generate()`` does after the prefill when the model says ``text`` and then ``<|im_end|>``: one
        forward per token of ``text`` (each yields the next token's logits; ``<|im_end|>`` ends the loop
        without one). The demo calls ``generate()`` every turn, so a silent turn pays this for ``NO REPLY``;
        returns ms. Text positions advance by one in all three M-RoPE sections."""
        torch = self.torch
        t0 = time.perf_counter()
        with torch.no_grad():
            for tok in self.ref.tokenizer.encode(text, add_special_tokens=False):
                ids = torch.tensor([[tok]], device=self.device)
                pos = torch.full((3, 1, 1), self.next_pos, device=self.device, dtype=torch.long)
                out = self.model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=1,
                                 **{self.cache_kw: self.cache})
                self.cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else self.cache
                self.next_pos += 1
                out.logits[0, -1].float().cpu()  # generate() reads every step's logits (and waits for a GPU)
        return (time.perf_counter() - t0) * 1e3


def decision(logits: np.ndarray, unsayable: np.ndarray, quiet: np.ndarray) -> tuple[bool, int]:
    """(speaks at talkativeness 0, top-1 sayable token) from raw first-token logits."""
    x = logits.astype(np.float64).copy()
    x[unsayable] = -np.inf
    return bool(np.max(np.delete(x, quiet)) > np.max(x[quiet])), int(np.argmax(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["3b", "mid", "small"], default="mid")
    ap.add_argument("--quick", action="store_true", help="--shape small --turns 12 --at 5 10")
    ap.add_argument("--turns", type=int, default=100)
    ap.add_argument("--at", type=int, nargs="+", default=[10, 100], help="turns (1-based) to report")
    ap.add_argument("--tokens-per-frame", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the GGUF files")
    ap.add_argument("--with-flash-attn-on", action="store_true",
                    help="also step a second engine with flash attention forced on (the default before "
                         "2026-11-27 on the CPU), in the same lockstep")
    ap.add_argument("--with-chunked", action="store_true",
                    help="also step a second engine that evaluates each turn chunk by chunk (text as token ids, each "
                         "frame apart: the way before one-pass turns), in the same lockstep")
    ap.add_argument("--hf-prefill-only", action="store_true",
                    help="transformers evaluates each turn and stops at the first token's logits; by default it also "
                         "decodes the silent turn's NO REPLY token by token after it, as the demo's generate() call does "
                         "(timed apart, so the prefill-only ratio is reported either way)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="f32: an F16 GGUF pair for the engine, the same values in float32 for transformers; bf16: a "
                         "BF16 GGUF pair (patch kernels F32) and bfloat16 in transformers, bit for bit the same weights "
                         "(the official checkpoint's dtype; half the memory, so the 3B fits both sides in 24 GiB)")
    ap.add_argument("--kv", choices=["f16", "bf16", "f32"],
                    help="the engine's KV cache type (default: bf16 with --dtype bf16, as transformers' cache is then; "
                         "else f16)")
    ap.add_argument("--gpu", action="store_true",
                    help="both on the GPU: every engine layer and the projector offloaded (needs a GPU build of "
                         "llama-cpp-python, see bench/gpu.sh); transformers on CUDA in bfloat16")
    a = ap.parse_args()
    if a.quick:
        a.shape, a.turns, a.at = "small", 12, [5, 10]
    info = machine_info()
    threads = usable_cores()
    # The 3B is the one bench/model_3b.py builds (reused when already there: a conversion takes minutes).
    work = (MODEL_3B_WORK if a.shape == "3b" and a.dtype == "f32"
            else REPO / ".cache" / (f"bench-hf-{a.shape}" + ("-bf16" if a.dtype == "bf16" else "")))
    t_all = time.perf_counter()
    print(f"building the random {a.shape} model…", flush=True)
    # F16 (or BF16) text + mmproj: the same weights transformers gets
    built = build(a.shape, work, quant=None, outtype="bf16" if a.dtype == "bf16" else "f16")
    print(f"  {built['n_params'] / 1e9:.2f} B parameters; convert {built['convert_s']:.0f} s", flush=True)
    frames = load_frames(40, a.tokens_per_frame)
    n_ctx = 32768
    kv = a.kv or ("bf16" if a.dtype == "bf16" else "f16")
    eng = LlamaBackend(built["f16"], built["mmproj"],
                       LlamaSettings(n_ctx=n_ctx, n_gpu_layers=-1 if a.gpu else 0, embed_cache_mib=0, kv_type=kv))
    eng_fa = (LlamaBackend(built["f16"], built["mmproj"], LlamaSettings(
        n_ctx=n_ctx, n_gpu_layers=-1 if a.gpu else 0, embed_cache_mib=0, kv_type=kv, flash_attn="on"))
        if a.with_flash_attn_on else None)
    eng_chunked = (LlamaBackend(built["f16"], built["mmproj"], LlamaSettings(
        n_ctx=n_ctx, n_gpu_layers=-1 if a.gpu else 0, embed_cache_mib=0, kv_type=kv, one_pass=False))
        if a.with_chunked else None)
    hf = HFStream(built["hf_dir"], built["config"], threads, "cuda" if a.gpu else "cpu", bf16=a.dtype == "bf16")
    eng_device = eng.device
    log = []
    hf_said = ""  # what transformers already decoded into its cache at the end of the previous turn
    try:
        for turn in range(a.turns):
            i = (turn * 2) % (len(frames) - 1)
            imgs = frames[i:i + 2]
            # The previous turn's end (or the system prompt): the same text on both sides, less what transformers
            # decoded already (the engine keeps a silent turn's NO REPLY out of the cache and evaluates it here).
            tail = eng.pending[len(hf_said):]
            r = eng.step(imgs, "", talkativeness=QUIET, max_new_tokens=8)
            e_logits = eng.last_logits
            fa_ms = eng_fa.step(imgs, "", talkativeness=QUIET, max_new_tokens=8).timings.total_ms if eng_fa else None
            ch_ms = (eng_chunked.step(imgs, "", talkativeness=QUIET, max_new_tokens=8).timings.total_ms
                     if eng_chunked else None)
            h_logits, h_ms, h_tokens = hf.step(imgs, tail)
            h_pos = hf.next_pos  # after the turn, before any decoding: where the engine stands too
            # What the engine said this turn (NO REPLY; nothing when the first token was <|im_end|>) is either in
            # its pending tail, evaluated at the head of the next turn, or already in its cache (a reply it
            # decoded). transformers decodes it now as generate() would, unless asked for the prefill alone and
            # the engine has not decoded it either.
            in_tail = bool(r.text) and eng.pending.startswith(r.text)
            decode = r.text if r.text and not (a.hf_prefill_only and in_tail) else ""
            h_decode_ms = hf.decode(decode) if decode else 0.0
            hf_said = decode if in_tail else ""  # to strip from the next tail
            e_speak, e_top = decision(e_logits, eng._unsayable, eng._quiet_ids)
            h_speak, h_top = decision(h_logits, eng._unsayable, eng._quiet_ids)
            log.append({"turn": turn + 1, "engine_ms": r.timings.total_ms, "hf_ms": h_ms + h_decode_ms,
                        "hf_prefill_ms": h_ms, "hf_decode_ms": h_decode_ms, "hf_vision_ms": hf.vision_ms, "engine_silent": r.silent,
                        "engine_fa_on_ms": fa_ms, "engine_chunked_ms": ch_ms,
                        "engine_vision_ms": r.timings.vision_ms, "engine_image_prefill_ms": r.timings.image_prefill_ms,
                        "engine_prefill_ms": r.timings.prefill_ms, "engine_cells": r.kv_cells, "hf_tokens_fed": h_tokens,
                        "hf_positions": h_pos, "engine_positions": eng.n_past,
                        "speaks_engine": e_speak, "speaks_hf": h_speak, "top1_engine": e_top, "top1_hf": h_top,
                        "max_abs_logit_diff": float(np.max(np.abs(e_logits - h_logits)))})
            if (turn + 1) % 10 == 0 or turn + 1 in a.at:
                e = log[-1]
                print(f"  turn {turn + 1}: engine {e['engine_ms']:.0f} ms, transformers {e['hf_ms']:.0f} ms "
                      f"(prefill {e['hf_prefill_ms']:.0f}, decode {e['hf_decode_ms']:.0f}), "
                      f"decisions {'agree' if e_speak == h_speak else 'DIFFER'}, top-1 "
                      f"{'same' if e_top == h_top else 'differs'}", flush=True)
        cur, peak = rss_mib()
    finally:
        eng.close()
        for other in (eng_fa, eng_chunked):
            if other:
                other.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    def window(t: int, key: str) -> float:  # median of turns t-1, t, t+1 that exist
        return med([e[key] for e in log if abs(e["turn"] - t) <= 1])

    rows, points = [], []
    for t in a.at:
        if t > len(log):
            continue
        em, hm, hp = window(t, "engine_ms"), window(t, "hf_ms"), window(t, "hf_prefill_ms")
        fm = window(t, "engine_fa_on_ms") if eng_fa else float("nan")
        cm = window(t, "engine_chunked_ms") if eng_chunked else float("nan")
        rows.append([t, em, hm, hm / em, hp, hp / em, fm, cm, log[t - 1]["engine_cells"], log[t - 1]["hf_tokens_fed"]])
        points.append({"turn": t, "engine_ms": em, "hf_ms": hm, "ratio_hf_over_engine": hm / em,
                       "hf_prefill_ms": hp, "ratio_hf_prefill_over_engine": hp / em}
                      | ({"engine_fa_on_ms": fm} if eng_fa else {}) | ({"engine_chunked_ms": cm} if eng_chunked else {}))
    agree = sum(e["speaks_engine"] == e["speaks_hf"] for e in log)
    top1 = sum(e["top1_engine"] == e["top1_hf"] for e in log)
    same_pos = all(e["engine_positions"] == e["hf_positions"] for e in log)
    print_table(f"per-step latency on {'the GPU' if a.gpu else 'the CPU'}, {a.shape} shape ({built['n_params'] / 1e9:.2f} B), "
                f"{a.dtype} weights, engine KV {kv}, {threads} threads each, "
                f"2 frames/turn of {frames[0].shape[1]}×{frames[0].shape[0]} px, median of turns t±1 (ms)",
                ["turn", "engine", "transformers + past_key_values" + (" (prefill only)" if a.hf_prefill_only else
                                                                         " (prefill + NO REPLY decode)"),
                 "ratio", "transformers: the prefill alone", "ratio", "engine, flash attn on",
                 "engine, chunk by chunk", "engine KV cells", "tokens fed (HF)"], rows)
    for t in a.at:
        if t <= len(log):
            w = {k: window(t, k) for k in ("engine_vision_ms", "engine_image_prefill_ms", "engine_prefill_ms",
                                           "hf_vision_ms", "hf_prefill_ms", "hf_decode_ms")}
            print(f"turn {t}: engine vision {w['engine_vision_ms']:.0f}, text model "
                  f"{w['engine_image_prefill_ms'] + w['engine_prefill_ms']:.0f} ms; transformers vision "
                  f"{w['hf_vision_ms']:.0f}, rest of the prefill {w['hf_prefill_ms'] - w['hf_vision_ms']:.0f}, "
                  f"NO REPLY decode {w['hf_decode_ms']:.0f} ms")
    print(f"decisions (speak/silent at talkativeness 0) agree on {agree}/{len(log)} turns; top-1 first token on "
          f"{top1}/{len(log)}; positions {'identical on every turn' if same_pos else 'DIFFER'}")
    write_results(f"hf_vs_engine_{a.shape}" + ("_bf16" if a.dtype == "bf16" else "") + ("_quick" if a.quick else "")
                  + ("_gpu" if a.gpu else ""),
                  {"machine": info, "shape": a.shape, "config": built["config"], "n_params": built["n_params"],
                   "weights": (f"engine: {'BF16' if a.dtype == 'bf16' else 'F16'} GGUF text + mmproj, KV {kv}; "
                               "transformers: the same values in "
                               + ("bfloat16" if a.gpu or a.dtype == "bf16" else "float32") + (" on CUDA" if a.gpu else "")),
                   "hf_decodes_silence": not a.hf_prefill_only,
                   "engine_device": eng_device, "engine_flash_attn": eng.settings.flash_attn, "engine_kv": kv,
                   "threads": threads, "n_ctx": n_ctx, "frame_px": list(frames[0].shape[:2]),
                   "points": points, "decisions_agree": agree, "positions_identical": same_pos, "top1_agree": top1, "turns": len(log), "log": log,
                   "rss_mib": cur, "peak_rss_mib": peak, "seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
