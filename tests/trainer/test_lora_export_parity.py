"""Issue 25, item 4's export check on a small model of the 3B's layout: a correction learned with LoRA, merged,
exported as ``duet train feedback`` exports it (f32 → Q8_0), decides through the real engine what the PyTorch
model decides on the corrected clip.

The same pieces as ``bench/lora_3b_export.py`` runs on the real 3B shape (docs/training-estimates.md): the
trainer's ``load_policy(lora=True)`` in bf16, ``sft.dialogue_loss`` with the marked turn weighted by
``feedback_job.MARKED_WEIGHT``, ``modeling.save_hf`` (which merges), ``export.export_model``,
``rollout.play`` (greedy) against ``feedback_check.play`` through ``LlamaBackend``, ``export.compare``.
The model is random (the 3B's layout with 2 layers, width 256 and 1,024 ids, the tiny model's tokenizer): what it
says is only what it was trained to say, which is what makes the decisions worth comparing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.modelhub.test_real_3b_plan import REAL_3B

QUESTION = "Tell me when someone crosses the street."
CORRECTION = "A man in a dark coat walks past the lamp post."  # the user's words, at the marked turn
TURNS, MARKED, TOKENS_PER_FRAME = 4, 2, 32
STEPS, LR = 60, 2e-3  # learned (every trained token top-1) after ~42 steps on the development machine


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A random bf16 checkpoint of the 3B's layout, small (bench/model_3b.py's "quick" shape)."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from app.core import protocol
    from app.modelhub.tiny import build_tiny, write_processor_files

    hf = tmp_path_factory.mktemp("quick3b") / "hf"
    hf.mkdir()
    tiny = build_tiny()
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny.hf_dir / f).exists():
            shutil.copy(tiny.hf_dir / f, hf / f)
    write_processor_files(hf, max_pixels=128 * 28 * 28)
    cfg = json.loads(json.dumps(REAL_3B))
    cfg |= {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 2,
            "vocab_size": 1024}
    cfg["vision_config"] |= {"depth": 4, "fullatt_block_indexes": [1, 3], "hidden_size": 256,
                             "intermediate_size": 512, "num_heads": 4, "out_hidden_size": 256}
    tok = AutoTokenizer.from_pretrained(hf)
    cfg |= {k: tok.convert_tokens_to_ids(t) for k, t in (("image_token_id", protocol.IMAGE_PAD),
                                                          ("video_token_id", protocol.VIDEO_PAD),
                                                          ("vision_start_token_id", protocol.VISION_START),
                                                          ("vision_end_token_id", protocol.VISION_END))}
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg)).save_pretrained(hf, safe_serialization=True)
    finally:
        torch.set_default_dtype(default)
    return hf


@pytest.fixture(scope="module")
def clip(vtest_avi, tmp_path_factory) -> Path:
    """The first four turns (2 frames, 1 s apart) of the street video as a file of their own: the engine plays
    a whole file, so the clip ends where the corrected dialogue ends."""
    import cv2

    out = tmp_path_factory.mktemp("clip") / "vtest-4turns.avi"
    cap = cv2.VideoCapture(str(vtest_avi))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = [cap.read()[1] for _ in range(int(round(TURNS * 2 * fps)) + 1)]
    cap.release()
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(f)
    w.release()
    return out


def corrected(clip: Path):
    from app.trainer.dialogue import Dialogue, DialogueTurn, read_turn_frames

    frames = read_turn_frames(clip, 1.0, 2, TOKENS_PER_FRAME)
    assert len(frames) == TURNS
    return Dialogue("corrected", [DialogueTurn(f.time, list(f.images), QUESTION if i == 0 else "",
                                               CORRECTION if i == MARKED else "NO REPLY")
                                  for i, f in enumerate(frames)], meta={"touched": [MARKED]})


@pytest.fixture(scope="module")
def merged(base, clip, tmp_path_factory) -> Path:
    """LoRA-trained on the corrected clip with the trainer's own pieces, merged and saved by ``save_hf``."""
    import torch

    from app.trainer.encode import Encoder
    from app.trainer.feedback_job import MARKED_WEIGHT
    from app.trainer.modeling import load_policy, save_hf
    from app.trainer.session_dialogues import marked_weights
    from app.trainer.sft import dialogue_loss

    torch.manual_seed(0)
    enc = Encoder(base)
    d = corrected(clip)
    e = enc.encode(d)
    w = marked_weights(e, d, MARKED_WEIGHT)
    assert w is not None and float(w.max()) == MARKED_WEIGHT
    model = load_policy(base, dtype="bfloat16", freeze_vision=True, lora=True, lora_r=16, lora_alpha=32,
                        gradient_checkpointing=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95))
    losses = []
    for _ in range(STEPS):
        loss = dialogue_loss(model, enc, e, "cpu", w)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    return save_hf(model, base, tmp_path_factory.mktemp("merged") / "hf")


def torch_turns(hf: Path, clip: Path) -> list[list]:
    """Greedy play of the clip by the checkpoint in PyTorch (float32: the values the f32 conversion writes)."""
    from app.trainer.dialogue import Dialogue, DialogueTurn
    from app.trainer.encode import Encoder
    from app.trainer.modeling import load_policy
    from app.trainer.rollout import play

    d = corrected(clip)
    skeleton = Dialogue(d.id, [DialogueTurn(t.time, t.images, t.user_text) for t in d.turns])
    r = play(load_policy(hf, dtype="float32"), Encoder(hf), skeleton, sample=False, max_new_tokens=48)
    return [[round(t, 3), "" if x == "NO REPLY" else x] for t, x in zip(r.times, r.texts, strict=True)]


def test_merged_weights_differ_from_the_base(base, merged):
    """The LoRA delta is in the saved checkpoint (the export converts this file, not the adapter)."""
    from safetensors.torch import load_file

    b = {k: v for f in base.glob("*.safetensors") for k, v in load_file(f).items()}
    m = {k: v for f in merged.glob("*.safetensors") for k, v in load_file(f).items()}
    targeted = [k for k in b if "layers." in k and "visual" not in k and k.endswith("proj.weight")]
    assert len(targeted) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert all(k in m for k in targeted)
    assert all(not b[k].equal(m[k]) for k in targeted)
    assert all(b[k].equal(m[k]) for k in b if "visual" in k)  # the vision tower is frozen


def test_exported_gguf_decides_as_pytorch_on_the_corrected_clip(base, merged, clip, tmp_path):
    from app.eval.predictions import Prediction
    from app.trainer.export import compare, export_model
    from app.trainer.feedback_check import Replay, open_backend, play, same_words

    ref = torch_turns(merged, clip)
    # learned: silent at the three other turns, the correction in the user's words at the marked one
    assert [bool(s) for _, s in ref] == [i == MARKED for i in range(TURNS)], ref
    assert same_words(ref[MARKED][1], CORRECTION), ref
    assert torch_turns(base, clip) != ref  # the base says something else: the decisions below are the training's

    model, mmproj = export_model(merged, tmp_path / "gguf", "quick-feedback", "f32", "Q8_0")
    assert "q8_0" in model.name.lower()
    be = open_backend(model, mmproj)
    try:
        got = play(be, Replay("corrected", clip, 1.0, 2, TOKENS_PER_FRAME, 0.0, ((0.0, QUESTION),)), 48)
    finally:
        be.close()

    def pred(turns) -> Prediction:
        return Prediction("clip", [(t, s) for t, s in turns if s], len(turns))

    assert [t for t, _ in got] == [t for t, _ in ref]  # the same turns at the same video times
    res = compare({"clip": pred(ref)}, {"clip": pred(got)}, {"clip": [SimpleNamespace(time=t) for t, _ in ref]})
    assert res["decision_agreement"] == 1.0 and res["text_agreement"] == 1.0, (ref, got)
    assert res["examples_identical"] == 1
