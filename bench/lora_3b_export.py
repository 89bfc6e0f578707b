"""A feedback fine-tune with LoRA on the Qwen2.5-VL-3B shape (random weights), exported, checked against PyTorch.

Issue 25's last check of the 3B path: does the GGUF that ``duet train feedback`` exports decide what the trained
PyTorch model decides on the corrected clip? Every piece is the trainer's own: the random bf16 checkpoint of
``bench/lora_3b.py`` (its ``build``), ``load_policy(lora=True)`` (r 16, α 32, vision frozen, gradient
checkpointing, bf16), ``sft.dialogue_loss`` with the marked turn weighted by ``feedback_job.MARKED_WEIGHT``
(``session_dialogues.marked_weights``), the merge and save of ``modeling.save_hf``, ``export.export_model`` at
the job's settings (f32 conversion, then Q8_0; ``--quants Q8_0,F16`` adds an F16 export), then the clip played
greedily by the merged model in PyTorch (``rollout.play``, one KV cache per clip) and by each GGUF through the
real engine (``feedback_check.play``: ``ProactiveSession`` over ``LlamaBackend`` in its own process), compared
per turn by ``export.compare`` (same speak/silent decision, same text when both speak).

The corrected clip: the first ``--turns`` turns (2 frames, 1 s apart, ``--tokens-per-frame`` visual tokens each)
of Debian's ``vtest.avi`` cut into a clip file (MJPG) that both sides read, a question in the first turn, the
user's correction in their own words at turn ``turns // 2`` (the marked turn), NO REPLY at the others. A random
model says nothing sensible, so it is trained on that one dialogue (batch 1, AdamW β 0.9/0.95, clip 1.0, no
warm-up) at a higher learning rate than the job's (1e-3; 3e-3 diverged on the 3B), until every trained token is
the top-1 prediction (teacher-forced) for ``--extra-steps`` more steps, ``--steps`` are done or
``--train-minutes`` are spent: what it learned makes the decisions worth comparing (it must stay silent at three
turns and say a sentence at one). Whether each side says the correction at its turn is recorded too.

    nice -n 5 .venv/bin/python bench/lora_3b_export.py [--shape 3b|small|quick] [--steps 200] [--lr 1e-3]
        [--tokens-per-frame 32] [--train-minutes 45] [--quants Q8_0,F16] [--tag _NAME] [--keep]

Each heavy phase runs in a child process (its peak RSS is its own): ``build`` (skipped when ``--keep`` left the
random checkpoint in ``.cache/bench-lora3b``), ``train`` (LoRA steps, merge, save), ``export`` (per quant),
``torch`` (PyTorch play), ``engine`` (per quant), ``torch_base`` (the untrained base played the same way: what
the clip got before). The merged checkpoint and the GGUFs are deleted at the end, the
random checkpoint too unless ``--keep``. Writes ``bench/results/lora_3b_export[_quick|_small][TAG].json`` after
every phase (``"complete": true`` once the last is done).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import VIDEO, machine_info, print_table, rss_mib, write_results  # noqa: E402
from bench.lora_3b import CORRECTION, QUESTION, WORK, build  # noqa: E402

INTERVAL, FRAMES_PER_TURN = 1.0, 2
MAX_NEW_TOKENS = 48  # feedback_check.play's default: the verification's own budget


def make_clip(out: Path, turns: int, source: Path = VIDEO) -> Path:
    """The first ``turns`` turns of ``source`` as a video file of its own (what both sides play): the engine plays
    a whole file, so the clip must end where the corrected dialogue ends."""
    import cv2

    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    n = int(round(turns * FRAMES_PER_TURN * INTERVAL * fps)) + 1  # up to t = duration inclusive
    tmp = out.with_name(out.stem + ".partial" + out.suffix)
    writer = None
    try:
        for _ in range(n):
            ok, img = cap.read()
            if not ok:
                raise RuntimeError(f"{source} is shorter than {turns} turns")
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (img.shape[1], img.shape[0]))
            writer.write(img)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    tmp.rename(out)
    return out


def corrected_dialogue(clip: Path, tokens_per_frame: int):
    """The dialogue the user's mark asks for: the question at turn 0, the correction at the middle turn."""
    from app.trainer.dialogue import Dialogue, DialogueTurn, read_turn_frames

    frames = read_turn_frames(clip, INTERVAL, FRAMES_PER_TURN, tokens_per_frame)
    marked = len(frames) // 2
    return Dialogue("vtest-corrected", [DialogueTurn(f.time, list(f.images), QUESTION if i == 0 else "",
                                                     CORRECTION if i == marked else "NO REPLY")
                                        for i, f in enumerate(frames)], meta={"touched": [marked]})


def train(hf: Path, merged: Path, clip: Path, a: argparse.Namespace) -> dict:
    """LoRA steps on the corrected dialogue until it is learned (or the budget ends); merge, save."""
    import torch
    from safetensors import safe_open

    from app.trainer.encode import Encoder
    from app.trainer.feedback_job import MARKED_WEIGHT
    from app.trainer.modeling import load_policy, save_hf, unwrap
    from app.trainer.session_dialogues import marked_weights
    from app.trainer.sft import dialogue_loss

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = Encoder(hf)
    d = corrected_dialogue(clip, a.tokens_per_frame)
    e = enc.encode(d)
    w = marked_weights(e, d, MARKED_WEIGHT)
    t0 = time.perf_counter()
    model = load_policy(hf, dtype="bfloat16", freeze_vision=True, lora=True, lora_r=16, lora_alpha=32,
                        gradient_checkpointing=True)
    load_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95))
    # teacher-forced top-1 accuracy of the trained tokens, read off the loss's own forward (a hook on the output
    # layer, no second pass): the loss alone cannot say "learned" when a random output layer bounds the logits
    labels = e.labels[1:]
    want = labels[labels != -100]
    seen: dict = {}
    model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: seen.__setitem__("logits", out))
    steps: list[dict] = []
    t_train = time.perf_counter()
    stopped, learned_at = "steps", None
    for step in range(1, a.steps + 1):
        t0 = time.perf_counter()
        loss = dialogue_loss(model, enc, e, "cpu", w)
        top1 = seen["logits"][0].detach().argmax(-1) == want
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        rec = {"step": step, "loss": float(loss.detach()), "top1": float(top1.float().mean()),
               "step_s": time.perf_counter() - t0, "grad_norm": norm, "peak_rss_mib": rss_mib()[1],
               "loadavg": os.getloadavg()[0]}
        steps.append(rec)
        print(f"  step {step}: loss {rec['loss']:.4f}, top-1 {int(top1.sum())}/{len(want)}, {rec['step_s']:.1f} s, "
              f"grad norm {norm:.2f}, peak RSS {rec['peak_rss_mib'] / 1024:.2f} GiB, load {rec['loadavg']:.1f}",
              flush=True)
        learned_at = (learned_at or step) if bool(top1.all()) else None
        if learned_at is not None and step - learned_at >= a.extra_steps:
            stopped = "learned"  # every trained token top-1 for extra_steps more steps: margins for the export
            break
        if time.perf_counter() - t_train > a.train_minutes * 60:
            stopped = "train_minutes"
            break
    train_s = time.perf_counter() - t_train
    t0 = time.perf_counter()
    plain = unwrap(model)  # LoRA merged into the bf16 weights: what save_hf writes and the export converts
    merge_s = time.perf_counter() - t0
    delta = _weight_delta(plain, hf, safe_open)
    t0 = time.perf_counter()
    save_hf(plain, hf, merged)
    return {"tokens": len(e.input_ids), "visual_tokens": int((e.input_ids == enc.image_pad).sum()),
            "target_tokens": e.n_target_tokens, "turns": len(d.turns), "marked_turn": d.meta["touched"][0],
            "tokens_per_frame": a.tokens_per_frame, "lr": a.lr, "marked_weight": MARKED_WEIGHT,
            "trainable_params": sum(p.numel() for p in params), "load_s": load_s, "steps": steps,
            "stopped_by": stopped, "learned_at_step": learned_at, "train_s": train_s, "merge_s": merge_s, "save_s": time.perf_counter() - t0,
            "merged_delta": delta, "peak_rss_mib": _peak()}


def _weight_delta(plain, base_dir: Path, safe_open) -> dict:
    """How far the merged weights moved from the base (0 would mean the merge was lost): the largest relative
    change of a LoRA-targeted tensor, and how many tensors changed at all."""
    import torch

    def key(name: str) -> str | None:  # the checkpoint and the live model name the language layers differently
        return name[name.index("layers."):] if "layers." in name and "visual" not in name \
            and name.endswith("proj.weight") else None

    state = {key(k): v for k, v in plain.state_dict().items() if key(k)}
    changed, worst, n = 0, 0.0, 0
    for f in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if key(k) not in state:
                    continue
                b, m = sf.get_tensor(k).float(), state[key(k)].float()
                n += 1
                rel = float((m - b).norm() / b.norm().clamp_min(1e-12))
                changed += int(bool(torch.any(m != b)))
                worst = max(worst, rel)
    return {"projection_tensors": n, "changed": changed, "max_relative_change": worst}


def play_torch(merged: Path, clip: Path, a: argparse.Namespace) -> dict:
    """A checkpoint (the merged one; the base for the "before") in PyTorch (the export's dtype, float32 by default), greedy, one KV cache per clip."""
    import torch

    from app.trainer.dialogue import Dialogue, DialogueTurn
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.rollout import play

    torch.set_num_threads(a.threads)
    enc = Encoder(merged)
    d = corrected_dialogue(clip, a.tokens_per_frame)
    skeleton = Dialogue(d.id, [DialogueTurn(t.time, t.images, t.user_text) for t in d.turns])
    t0 = time.perf_counter()
    model = load_policy(merged, dtype=a.play_dtype)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = play(model, enc, skeleton, sample=False, max_new_tokens=MAX_NEW_TOKENS)
    first = [ids[0] if ids else None for ids in r.reply_ids]
    return {"turns": [[round(t, 3), "" if x == "NO REPLY" else x] for t, x in zip(r.times, r.texts, strict=True)],
            "first_tokens": [enc.tokenizer.decode([i]) if i is not None else "" for i in first],
            "dtype": a.play_dtype, "load_s": load_s, "play_s": time.perf_counter() - t0, "peak_rss_mib": _peak()}


def export(merged: Path, out: Path, quant: str) -> dict:
    """``export.export_model`` as the feedback job calls it (f32 conversion then ``quant``; F16 converts to f16)."""
    from app.trainer.export import export_model

    outtype = "f16" if quant.upper() == "F16" else "f32"
    t0 = time.perf_counter()
    model, mmproj = export_model(merged, out, "lora3b-feedback", outtype, quant)
    return {"quant": quant, "outtype": outtype, "model": str(model), "mmproj": str(mmproj),
            "model_gib": model.stat().st_size / 2**30, "mmproj_gib": mmproj.stat().st_size / 2**30,
            "export_s": time.perf_counter() - t0, "peak_rss_mib": _peak()}


def play_engine(model: Path, mmproj: Path, clip: Path, a: argparse.Namespace) -> dict:
    """The GGUF pair through the real engine, replayed as ``duet train feedback`` verifies a correction."""
    from app.trainer.feedback_check import Replay, open_backend, play

    rp = Replay("vtest-corrected", clip, INTERVAL, FRAMES_PER_TURN, a.tokens_per_frame, 0.0, ((0.0, QUESTION),))
    t0 = time.perf_counter()
    be = open_backend(model, mmproj, a.threads)
    try:
        open_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        turns = play(be, rp, MAX_NEW_TOKENS)
    finally:
        be.close()
    # llama.cpp runs in the engine's own process: its peak is that (waited-for) child's, not this one's
    return {"turns": [list(x) for x in turns], "open_s": open_s, "play_s": time.perf_counter() - t0,
            "peak_rss_mib": _peak(), "engine_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def verdicts(torch_turns: list, engine_turns: list, marked_turn: int, turn_s: float) -> dict:
    """``export.compare`` of the two plays, and what each says where: the correction (``feedback_check.judge``:
    at its turn or the one after, as the job verifies) and how many turns match the corrected targets."""
    from types import SimpleNamespace

    from app.eval.predictions import Prediction
    from app.trainer.export import compare
    from app.trainer.feedback_check import Check, judge, same_words

    def pred(turns: list) -> Prediction:
        return Prediction("clip", [(t, s) for t, s in turns if s], len(turns))

    frames = {"clip": [SimpleNamespace(time=t) for t, _ in torch_turns]}
    out = compare({"clip": pred(torch_turns)}, {"clip": pred(engine_turns)}, frames)
    t_mark = torch_turns[marked_turn][0]
    check = Check("clip", "wrong", CORRECTION, t_mark, t_mark + turn_s + 1e-3, t_mark)
    for side, turns in (("torch", torch_turns), ("engine", engine_turns)):
        targets = [CORRECTION if i == marked_turn else "" for i in range(len(turns))]
        out[side] = {"correction_learned": judge(check, [tuple(x) for x in turns]).ok,
                     "correction_at_its_turn": same_words(turns[marked_turn][1], CORRECTION),
                     "turns_as_targeted": sum((not s and not g) or (bool(g) and same_words(s, g))
                                              for (_, s), g in zip(turns, targets, strict=True))}
    out["turns_differing"] = [[t, s, e] for (t, s), (_, e) in zip(torch_turns, engine_turns, strict=False)
                              if (bool(s) != bool(e)) or s.strip() != e.strip()]
    return out


def _peak() -> float:
    return max(rss_mib()[1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="3b", choices=("3b", "small", "quick"))
    ap.add_argument("--steps", type=int, default=200, help="at most this many LoRA steps")
    ap.add_argument("--extra-steps", type=int, default=5,
                    help="once every trained token is top-1 (teacher-forced), train this many steps more, then stop")
    ap.add_argument("--train-minutes", type=float, default=45.0, help="stop training after this long")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--tokens-per-frame", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quants", default="Q8_0", help="comma-separated: Q8_0 (the job's), F16, ...")
    ap.add_argument("--play-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="the PyTorch side's dtype (float32: the very values of the f32 conversion)")
    ap.add_argument("--keep", action="store_true", help="keep the random checkpoint (and reuse it next time)")
    ap.add_argument("--tag", default="", help="appended to the result's name (a second setting keeps the first)")
    ap.add_argument("--phase", choices=("build", "train", "export", "torch", "torch_base", "engine"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--quant", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    return ap.parse_args()


def child(a: argparse.Namespace, base: Path, merged: Path, clip: Path, gguf: dict) -> dict:
    if a.phase == "build":
        return build(a.shape, base)
    if a.phase == "train":
        return train(base, merged, clip, a)
    if a.phase == "export":
        return export(merged, gguf[a.quant], a.quant)
    if a.phase in ("torch", "torch_base"):  # the base too: what the clip gets before training
        return play_torch(merged if a.phase == "torch" else base, clip, a)
    files = sorted(gguf[a.quant].glob("*.gguf"))
    model = next(p for p in files if not p.name.startswith("mmproj"))
    return play_engine(model, next(p for p in files if p.name.startswith("mmproj")), clip, a)


def main() -> int:
    a = parse()
    work = WORK / a.shape
    base, merged, clip = work / "hf", work / "merged", work / f"vtest-{a.turns}turns.avi"
    quants = [q.strip().upper() for q in a.quants.split(",") if q.strip()]
    gguf = {q: work / f"gguf-{q.lower()}" for q in quants + ([a.quant.upper()] if a.quant else [])}
    if a.phase:  # a child: one phase, its result as JSON
        Path(a.report).write_text(json.dumps(child(a, base, merged, clip, gguf)))
        return 0

    result: dict = {"machine": machine_info(), "shape": a.shape, "args": {k: v for k, v in vars(a).items()
                                                                          if k not in ("phase", "quant", "report")}}
    work.mkdir(parents=True, exist_ok=True)
    make_clip(clip, a.turns)
    name = "lora_3b_export" + ("" if a.shape == "3b" else f"_{a.shape}") + a.tag
    me = [sys.executable, __file__, *[x for k, v in result["args"].items() if k not in ("keep", "tag")
                                      for x in (f"--{k.replace('_', '-')}", str(v))]]
    # the job's quant first, played at once: a run cut short still has the first comparison
    jobs = [("build", None), ("train", None), ("export", quants[0]), ("torch", None), ("engine", quants[0]),
            *[(p, q) for q in quants[1:] for p in ("export", "engine")], ("torch_base", None)]
    t_all = time.perf_counter()
    for phase, q in jobs:
        key = phase + (f"_{q.lower()}" if q else "")
        if phase == "build" and (base / "config.json").is_file() and any(base.glob("*.safetensors")):
            print(f"reusing the random checkpoint in {base}", flush=True)
            continue
        report = work / f"{key}.json"
        print(f"{key} ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([*me, "--phase", phase, *(["--quant", q] if q else []), "--report", str(report)], check=True)
        result[key] = json.loads(report.read_text()) | {"wall_s": time.perf_counter() - t0}
        if phase == "engine":
            result[f"parity_{q.lower()}"] = verdicts(result["torch"]["turns"], result[key]["turns"],
                                                     result["train"]["marked_turn"], INTERVAL * FRAMES_PER_TURN)
        result["complete"] = key == jobs[-1][0] + (f"_{jobs[-1][1].lower()}" if jobs[-1][1] else "")
        result["total_s"] = time.perf_counter() - t_all
        result["machine"]["loadavg_end"] = os.getloadavg()
        write_results(name, result)  # after every phase: a run cut short keeps what it measured
    _report(result, quants)
    shutil.rmtree(merged, ignore_errors=True)
    for d in gguf.values():
        shutil.rmtree(d, ignore_errors=True)
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _report(result: dict, quants: list[str]) -> None:
    tr = result["train"]
    st = tr["steps"]
    print(f"\n{result['shape']}: {tr['turns']} turns, {tr['tokens']} tokens ({tr['visual_tokens']} visual, "
          f"{tr['target_tokens']} trained), lr {tr['lr']:g}: {len(st)} steps ({tr['stopped_by']}), loss "
          f"{st[0]['loss']:.3f} → {st[-1]['loss']:.4f}, median step {sorted(s['step_s'] for s in st)[len(st) // 2]:.1f} s; "
          f"merged: {tr['merged_delta']['changed']}/{tr['merged_delta']['projection_tensors']} projections changed")
    rows = []
    for i, (t, s) in enumerate(result["torch"]["turns"]):
        rows.append([f"{t:g}", s or "·", *[(result[f"engine_{q.lower()}"]["turns"][i][1] or "·")
                                           if i < len(result[f"engine_{q.lower()}"]["turns"]) else "(none)"
                                           for q in quants]])
    print_table("per turn (· = silent)", ["time s", f"PyTorch {result['torch']['dtype']}", *quants], rows)
    if "torch_base" in result:
        print("the base before training (PyTorch): " + " | ".join(s or "·" for _, s in result["torch_base"]["turns"]))
    for q in quants:
        p = result[f"parity_{q.lower()}"]
        print(f"{q}: decisions {p['decision_agreement']:.0%}, texts {p['text_agreement']}, "
              f"correction said by PyTorch {p['torch']['correction_learned']}, by the GGUF {p['engine']['correction_learned']}")


if __name__ == "__main__":
    sys.exit(main())
