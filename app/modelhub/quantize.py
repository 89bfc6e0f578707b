"""Quantizing a GGUF with llama.cpp's own quantizer (through llama-cpp-python).

K-quants pack rows in super-blocks of 256 values; a tensor whose rows are narrower (the tiny model's
64-wide layers, some vision tensors) cannot take them and llama.cpp silently falls back to a legacy
type. We predict those fallbacks from the file before quantizing so the user is told which tensors
will differ, instead of discovering it in a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gguf

from app.core.errors import InputError

# Names users type → llama_ftype values (llama.h). Kept explicit: a typo must fail loudly.
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "BF16": 32,
}
K_QUANTS = {n for n in FTYPES if "_K" in n}
QK_K = 256


class QuantizeError(InputError):
    """Quantization is impossible as asked; the message names the file."""


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    fallbacks: tuple[str, ...]  # tensors too narrow for K-quants (llama.cpp picks a legacy type)
    size_in: int
    size_out: int


def narrow_tensors(path: Path) -> list[str]:
    """2-D+ tensors whose row length is not a multiple of 256 (K-quant super-block)."""
    reader = gguf.GGUFReader(str(path))
    return [t.name for t in reader.tensors if len(t.shape) >= 2 and int(t.shape[0]) % QK_K != 0]


def quantize(src: Path | str, qtype: str, out: Path | str | None = None, *, overwrite: bool = False,
             threads: int = 0, token_embd_type: str | None = None) -> QuantizeResult:
    """Quantize ``src`` to ``qtype`` (e.g. Q4_K_M); output defaults to ``<stem>-<qtype>.gguf`` beside it.

    ``token_embd_type`` (a ggml type name such as ``Q4_K``) overrides the embedding table's type, as
    llama-quantize's ``--token-embedding-type`` does; by default llama.cpp picks it (Q6_K for the K-quant
    mixes of a model whose output head shares the table, as Qwen2.5-VL-3B's does)."""
    import llama_cpp

    from app.modelhub.llama_lib import load_backends

    load_backends()
    src = Path(src)
    qtype = qtype.upper()
    if qtype not in FTYPES:
        raise QuantizeError(f"--type {qtype}: unknown; choose one of {', '.join(FTYPES)}")
    if not src.exists():
        raise QuantizeError(f"{src}: no such file")
    try:
        fallbacks = narrow_tensors(src) if qtype in K_QUANTS else []
    except Exception as e:  # gguf raises ValueError/struct errors on non-GGUF input
        raise QuantizeError(f"{src}: not a readable GGUF file ({e})") from e
    stem = src.stem
    for suffix in ("-f32", "-f16", "-bf16"):
        stem = stem.removesuffix(suffix)
    out = Path(out) if out else src.with_name(f"{stem}-{qtype.lower()}.gguf")
    from app.core.bounded import check_output_file
    from app.modelhub.leftovers import remove_stale_partials

    check_output_file(out)  # a FIFO or a device is refused, never renamed over (even with --overwrite)
    if out.exists() and not overwrite:
        raise QuantizeError(f"{out}: already exists; pass --overwrite to replace it")
    remove_stale_partials(out)  # a killed quantization's temporary
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    if token_embd_type is not None:
        try:
            params.token_embedding_type = gguf.GGMLQuantizationType[token_embd_type.upper()].value
        except KeyError:
            raise QuantizeError(f"token_embd_type {token_embd_type}: not a ggml type name") from None
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.exists():
            raise QuantizeError(f"{src}: llama.cpp quantizer failed (code {rc}); see the log above")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return QuantizeResult(out, tuple(fallbacks), src.stat().st_size, out.stat().st_size)
