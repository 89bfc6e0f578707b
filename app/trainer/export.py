"""Export: trained HF weights (LoRA already merged by the stage) → GGUF pair → quantized → model library.

Uses the project's own converter and quantizer, so a fine-tune goes through exactly the code path a
downloaded MMDuet2 does. Registering writes ``library.json`` atomically; the app resolves models
through the library at selection time, so the new entry is selectable without a restart.

Parity: the exported GGUF is run by the real engine (``LlamaBackend`` under the evaluation runner's
``ProactiveSession``) on held-out clips and its per-turn decisions and texts are compared with the
trained transformers model decoding greedily on the same frames.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from app.trainer.config import TrainConfig
from app.trainer.jobs import JobError, Reporter, check_disk


def export_stage_dir(cfg: TrainConfig) -> Path:
    hf = cfg.out / cfg.export.stage / "final"
    if not (hf / "config.json").is_file():
        raise JobError("missing", f"no trained model at {hf}",
                       f"run `duet train {cfg.export.stage}` with the same recipe first", code=2)
    return hf


def export_model(hf_dir: Path, out_dir: Path, name: str, outtype: str = "f32", quant: str = "Q8_0") -> tuple[Path, Path]:
    """Convert (and quantize the text model); returns (model, mmproj). The mmproj stays float."""
    from app.modelhub.convert import ConversionError, convert
    from app.modelhub.quantize import QuantizeError, quantize

    size = sum(f.stat().st_size for f in hf_dir.glob("*.safetensors"))
    # On disk at once: the float GGUF (up to twice a bf16 checkpoint as f32) and its quantized copy (at most the
    # checkpoint's size); the 3B as f32 is 15 GB before its Q8_0 is written, more than "twice the checkpoint".
    check_disk(out_dir, size * (3 if outtype == "f32" else 2))
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        res = convert(hf_dir, tmp, outtype=outtype, name=name)
        model = res.model if hasattr(res, "model") else res[0]
        mmproj = res.mmproj if hasattr(res, "mmproj") else res[1]
        if quant and quant.upper() not in ("F32", outtype.upper()):
            q = quantize(model, quant.upper())
            model.unlink()
            model = q.path if hasattr(q, "path") else q[0]
    except (ConversionError, QuantizeError) as e:
        raise JobError("export", str(e), "the trained checkpoint could not be converted; see the message") from e
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir / Path(model).name, out_dir / Path(mmproj).name


def register(name: str, model: Path, mmproj: Path, source: str, notes: str = "", library_root: Path | None = None) -> Any:
    from app.modelhub.library import ModelLibrary

    return ModelLibrary(library_root).add(name, model, mmproj, source=source, copy=True, notes=notes, replace=True)


def engine_predictions(model: Path, mmproj: Path, dataset: Any, cfg: TrainConfig, max_new_tokens: int = 24) -> dict:
    """Run the GGUF pair through the real engine + session on ``dataset`` (greedy, eval mode)."""
    from app.core.config import BackendSettings
    from app.engine.factory import make_backend
    from app.eval.runner import RunSettings, predict_example

    settings = RunSettings(interval=cfg.data.interval, frames_per_turn=cfg.data.frames_per_turn,
                           tokens_per_frame=cfg.data.tokens_per_frame, max_new_tokens=max_new_tokens)
    out = {}
    be = make_backend(str(model), str(mmproj), BackendSettings(n_ctx=4096, n_threads=cfg.threads, n_gpu_layers=0))
    try:
        for ex in dataset:
            out[ex.id] = predict_example(ex, be, settings)
    finally:
        be.close()
    return out


def compare(hf_preds: dict, engine_preds: dict, frames: dict) -> dict[str, Any]:
    """Per-turn agreement: same speak/silent decision, and same text when both speak."""
    turns = decisions = texts = spoken = 0
    identical = 0
    for ex_id, hp in hf_preds.items():
        ep = engine_preds[ex_id]
        times = [round(f.time, 3) for f in frames[ex_id]]
        h = {round(t, 3): x for t, x in hp.replies}
        e = {round(t, 3): x for t, x in ep.replies}
        same_all = True
        for t in times:
            turns += 1
            hs, es = t in h, t in e
            if hs == es:
                decisions += 1
            else:
                same_all = False
            if hs and es:
                spoken += 1
                if h[t].strip() == e[t].strip():
                    texts += 1
                else:
                    same_all = False
        identical += int(same_all)
    return {"turns": turns, "decision_agreement": decisions / turns if turns else None,
            "both_spoke": spoken, "text_agreement": texts / spoken if spoken else None,
            "examples_identical": identical, "examples": len(hf_preds)}


def run_export(cfg: TrainConfig, reporter: Reporter, *, parity: bool = True, library_root: Path | None = None) -> Any:
    from app.trainer.data import heldout_subset, load_sources
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.rollout import greedy_predictions

    e = cfg.export
    hf = export_stage_dir(cfg)
    reporter.emit("start", stage="export", source=str(hf), name=e.name, quant=e.quant)
    model, mmproj = export_model(hf, cfg.out / "export", e.name, e.outtype, e.quant)
    reporter.emit("converted", stage="export", model=str(model), mmproj=str(mmproj),
                  model_mb=round(model.stat().st_size / 2**20, 2), mmproj_mb=round(mmproj.stat().st_size / 2**20, 2))
    result: dict[str, Any] = {}
    if parity:
        src = load_sources(cfg, cfg.out / "data")
        held = heldout_subset(src, cfg.sft.eval_limit)
        if len(held):
            enc = Encoder(hf)
            pol = load_policy(hf, device="cpu")
            hf_preds = greedy_predictions(pol, enc, held, src.frames, cfg.grpo.max_new_tokens)
            eng_preds = engine_predictions(model, mmproj, held, cfg, cfg.grpo.max_new_tokens)
            result = compare(hf_preds, eng_preds, src.frames)
            reporter.emit("parity", stage="export", quant=e.quant, **result)
    entry = register(e.name, model, mmproj, e.source, notes=f"trained by duet train from {cfg.path}",
                     library_root=library_root)
    reporter.emit("done", stage="export", name=entry.name, model=str(entry.model), mmproj=str(entry.mmproj),
                  source=entry.source, parity=result)
    return entry
