"""Q8_0 and Q4_K_M quantizations of the tiny model load, run, and stay close to F16."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.modelhub.convert import convert
from app.modelhub.quantize import QuantizeError, quantize


@pytest.fixture(scope="module")
def f16(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("f16")
    return convert(tiny_model.hf_dir, out, outtype="f16", name="tiny")


def decision_logits(model, mmproj, frames) -> list[np.ndarray]:
    with LlamaBackend(model, mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0)) as b:
        out = []
        for i, imgs in enumerate(frames):
            b.step(imgs, "What is happening?" if i == 0 else "", talkativeness=-100.0)
            out.append(b.last_logits.copy())
        return out


@pytest.mark.parametrize("qtype,min_corr", [("Q8_0", 0.999), ("Q4_K_M", 0.95)])
def test_quantized_runs_and_agrees_with_f16(f16, tmp_path, qtype, min_corr):
    r = quantize(f16.model, qtype, tmp_path / f"tiny-{qtype}.gguf")
    assert r.size_out < r.size_in
    if qtype == "Q4_K_M":
        assert r.fallbacks, "64-wide tensors cannot take K-quants; the fallbacks must be reported"
    rng = np.random.default_rng(0)
    frames = [[rng.integers(0, 256, (112, 140, 3), dtype=np.uint8) for _ in range(2)] for _ in range(6)]
    ref = decision_logits(f16.model, f16.mmproj, frames)
    got = decision_logits(r.path, f16.mmproj, frames)
    corr = min(float(np.corrcoef(a, b)[0, 1]) for a, b in zip(ref, got))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    top1 = np.mean([int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ref, got)])
    print(f"\n{qtype} vs F16 over {len(frames)} turns: min corr {corr:.4f}, max |Δ| {diff:.3f}, top-1 {top1:.0%}, "
          f"{r.size_in / 1e3:.0f} kB → {r.size_out / 1e3:.0f} kB")
    assert corr >= min_corr


def test_quantize_errors(f16, tmp_path):
    with pytest.raises(QuantizeError, match="unknown"):
        quantize(f16.model, "Q9_X")
    with pytest.raises(QuantizeError, match="no such file"):
        quantize(tmp_path / "absent.gguf", "Q8_0")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(QuantizeError, match="not a readable GGUF"):
        quantize(bad, "Q4_K_M")
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"x")
    with pytest.raises(QuantizeError, match="already exists"):
        quantize(f16.model, "Q8_0", out)
    assert out.read_bytes() == b"x"


def test_no_reply_token_is_first_of_protocol_string(tiny_model):
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=512, n_gpu_layers=0)) as b:
        assert b.model.detokenize([b._no_reply_first]) == protocol.NO_REPLY.split()[0]
