"""The bundled demo model (assets/models/demo, GGUF) as a Hugging Face checkpoint the trainer can start from.

Fine-tuning on feedback (`duet train feedback --base demo`, the Train page) needs HF weights, and the demo
ships only as GGUF; a fresh install has trained none (`make run` and the packaged app use the bundled file).
Training the demo here (`duet train demo`) would also give weights that depend on the CPU they were trained on
(a second CPU family made another demo). So the bundled GGUF is read back instead: the tiny
checkpoint the demo recipe starts from supplies the config, tokenizer and processor files and the tensor
names, and every tensor is replaced by the bundled one, dequantized, through the inverse of the converter's
plan (:func:`app.modelhub.convert.plan_tensors`). The result is checked before use: every planned tensor,
converted forward again, equals the bundled file's data exactly, and both GGUFs of the template carry the
same settings and vocabulary as the bundled pair. The same weights on every machine, then.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import gguf
import numpy as np

from app.modelhub.convert import canonical_name, load_config, plan_tensors
from app.modelhub.safetensors_index import SafetensorsCheckpoint

# A file in a checkpoint folder saying it is the demo model (so `--base FOLDER` trains like `--base demo`).
DEMO_MARK = "duet-demo-family.txt"
# GGUF settings that legitimately differ between the template (F32, named "tiny") and the bundled pair.
_OWN_KEYS = {"general.name", "general.file_type", "general.quantization_version"}


def _fields(reader: gguf.GGUFReader) -> dict[str, object]:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.") and k not in _OWN_KEYS}


def _data(t: gguf.ReaderTensor) -> np.ndarray:
    """A GGUF tensor as float32 (numpy order: GGUF's ne reversed)."""
    if t.tensor_type == gguf.GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32)
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)


def hf_from_gguf(model: Path, mmproj: Path, template: Path, template_pair: tuple[Path, Path], out: Path) -> Path:
    """Write to ``out`` an HF checkpoint of ``template``'s architecture holding the weights of ``model`` + ``mmproj``.

    ``template_pair`` is ``template`` converted by the project's converter (the tiny model's cached F32
    pair): its settings and vocabulary must equal the bundled pair's, or the checkpoint would not be the
    bundled model.
    """
    from safetensors.numpy import save_file

    readers = {False: gguf.GGUFReader(str(model)), True: gguf.GGUFReader(str(mmproj))}
    for vision, path in ((False, template_pair[0]), (True, template_pair[1])):
        want, got = _fields(gguf.GGUFReader(str(path))), _fields(readers[vision])
        differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        if differ:
            raise ValueError(f"{path.name} vs the bundled {'mmproj' if vision else 'model'}: settings differ: {differ}")
    gguf_tensors = {v: {t.name: t for t in r.tensors} for v, r in readers.items()}

    cfg = load_config(template)
    ckpt = SafetensorsCheckpoint(template)
    try:
        shapes = {n: t.shape for n, t in ckpt.tensors.items()}
    finally:
        ckpt.close()
    plans = plan_tensors(cfg, shapes)
    if {(p.vision, p.gguf_name) for p in plans} != {(v, n) for v, ts in gguf_tensors.items() for n in ts}:
        raise ValueError("the bundled pair's tensors are not the ones the template converts to")
    by_source = defaultdict(list)
    for p in plans:
        by_source[p.sources[0]].append(p)

    weights: dict[str, np.ndarray] = {}
    for name, ps in by_source.items():
        parts = [_data(gguf_tensors[p.vision][p.gguf_name]).reshape(p.shape) for p in ps]
        if len(ps) == 1:  # as it is, or the vision MLP zero-padded: cut back to the checkpoint's width
            x = parts[0][tuple(slice(0, n) for n in shapes[name])]
        elif len(ps) == 2 and canonical_name(name) == "visual.patch_embed.proj.weight":  # two Conv2D → Conv3D
            x = np.stack(parts, axis=2)
        elif len(ps) == 3 and ".attn.qkv." in name:  # q, k, v → the fused tensor
            x = np.concatenate(parts, axis=0)
        else:
            raise ValueError(f"{name}: no inverse for a plan of {len(ps)} tensors")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != tuple(shapes[name]):
            raise ValueError(f"{name}: {x.shape} read back, the checkpoint has {tuple(shapes[name])}")
        for p, part in zip(ps, parts, strict=True):  # forward again: exactly the bundled data
            if not np.array_equal(p.transform([x]), part):
                raise ValueError(f"{p.gguf_name}: the inverse does not round-trip")
        weights[name] = x
    for name in shapes.keys() - weights.keys():  # only a tied output head is left out of the plan
        if not (canonical_name(name) == "lm_head.weight" and cfg.tied):
            raise ValueError(f"{name}: not in the converter's plan")
        embed = next(n for n in weights if canonical_name(n) == "model.embed_tokens.weight")
        weights[name] = weights[embed]

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in template.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copyfile(f, tmp / f.name)
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / DEMO_MARK).write_text("the bundled demo model read back from its GGUF: trains with the demo's replay "
                                 "and held-out clips (app/trainer/feedback_job.py: resolve_base)\n")
    tmp.rename(out)
    return out


def bundled_demo_checkpoint(out: Path) -> Path:
    """The bundled demo as an HF checkpoint in ``out`` (made once, then reused): the base that
    ``duet train feedback --base demo`` starts from when no demo was trained on this machine."""
    from app.core.assets import bundled_demo, verify_bundled
    from app.trainer.config import DEFAULT_DEMO_RECIPE
    from app.trainer.config import load_config as load_recipe
    from app.trainer.modeling import base_checkpoint

    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        if not (out / DEMO_MARK).is_file():  # made before the mark existed
            (out / DEMO_MARK).write_text("the bundled demo model read back from its GGUF\n")
        return out
    demo = bundled_demo()
    if demo is None:
        raise FileNotFoundError("this build ships no demo model (assets/models/demo)")
    problems = verify_bundled(demo)
    if problems:
        raise ValueError(f"the bundled demo model is damaged: {'; '.join(problems)}")
    template = base_checkpoint(load_recipe(str(DEFAULT_DEMO_RECIPE)))  # the tiny model the demo recipe starts from
    pair = (template.parent / "tiny-f32.gguf", template.parent / "mmproj-tiny-f32.gguf")  # its cached conversion
    out.parent.mkdir(parents=True, exist_ok=True)
    return hf_from_gguf(demo.model, demo.mmproj, template, pair, out)
