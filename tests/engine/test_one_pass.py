"""A turn evaluated as one batch of embeddings == the same turn chunk by chunk (text as token ids).

The one-pass path looks the text rows up itself (app.engine.token_embd, gguf-py's dequantizers), where
the chunked path lets llama.cpp's graph do it; a dequantizer that differed from ggml's by one rounding
would show here. The model is the tiny one made 256 wide, so that K-quants apply to its embedding
table (at 64 wide llama.cpp falls back to legacy types).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.token_embd import TokenEmbeddings
from app.modelhub.quantize import quantize
from app.modelhub.tiny import TinySpec, build_tiny
from app.modelhub.validate import check_pair

WIDE = TinySpec(hidden=256, ffn=512, mrope_section=(8, 12, 12))
TURNS = [(2, "What is on the screen?", -40.0), (2, "", -40.0), (1, "", 40.0), (2, "And now?", -40.0)]


@pytest.fixture(scope="module")
def wide_model():
    return build_tiny(WIDE)


def _token_embd_type(path) -> str:
    return next(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if t.name == "token_embd.weight")


# (file type, embedding table type): what a converted or pulled MMDuet2 carries (F16, BF16, Q8_0, and Q6_K,
# which the K-quant mixes give a tied table), then the other block formats the dequantizer must match.
CASES = [("F32", "F32"), ("F16", "F16"), ("BF16", "BF16"), ("Q8_0", "Q8_0"), ("Q4_K_M", "Q6_K"),
         ("Q4_K_M", "Q4_K"), ("Q4_K_M", "Q5_K"), ("Q4_K_M", "Q3_K"), ("Q4_K_M", "Q2_K"), ("Q4_0", "Q4_0"),
         ("Q4_0", "Q4_1"), ("Q4_0", "Q5_0"), ("Q4_0", "Q5_1")]


@pytest.mark.parametrize(("qtype", "embd_type"), CASES)
def test_one_pass_equals_chunk_by_chunk(wide_model, tmp_path_factory, qtype, embd_type):
    model = wide_model.model
    if qtype != "F32":
        model = quantize(model, qtype, tmp_path_factory.mktemp(qtype) / f"wide-{qtype}-{embd_type}.gguf",
                         token_embd_type=embd_type).path
    assert _token_embd_type(model) == embd_type  # the table this case claims to cover
    rng = np.random.default_rng(3)
    frames = [[rng.integers(0, 256, (112, 168, 3), dtype=np.uint8) for _ in range(n)] for n, _, _ in TURNS]
    base = LlamaSettings(n_ctx=4096, n_gpu_layers=0, kv_type="f32")
    with LlamaBackend(model, wide_model.mmproj, base) as one, \
            LlamaBackend(model, wide_model.mmproj, LlamaSettings(**{**base.__dict__, "one_pass": False})) as chunked:
        assert one.token_embd is not None and chunked.token_embd is None
        for (_, text, talk), imgs in zip(TURNS, frames):
            a = one.step(imgs, text, talkativeness=talk, max_new_tokens=5)
            b = chunked.step(imgs, text, talkativeness=talk, max_new_tokens=5)
            diff = float(np.abs(one.last_logits - chunked.last_logits).max())
            assert diff < 1e-3 * max(1.0, float(np.abs(chunked.last_logits).max())), f"{qtype}: max |Δlogit| {diff:.2e}"
            assert (a.text, a.silent) == (b.text, b.silent)
            assert one.n_past == chunked.n_past and one.n_cells == chunked.n_cells
            assert a.timings.image_prefill_ms == 0 and b.timings.image_prefill_ms > 0


def test_lookup_rows_are_the_tables_rows(tiny_model):
    """F32 table: a lookup returns exactly the stored rows, in the order asked, repeats included."""
    info = check_pair(tiny_model.model, tiny_model.mmproj)
    table = next(t for t in gguf.GGUFReader(str(tiny_model.model)).tensors if t.name == "token_embd.weight")
    emb = TokenEmbeddings(tiny_model.model, info.token_embd)
    ids = np.array([5, 0, 5, info.vocab_size - 1])
    assert np.array_equal(emb.lookup(ids), np.asarray(table.data)[ids])
    with pytest.raises(ValueError, match="out of range"):
        emb.lookup(np.array([info.token_embd.shape[0]]))
