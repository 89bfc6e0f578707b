"""Variants of the tiny model with a behaviour built in by hand, for tests that need one a random model lacks.

:func:`build_tiny_favouring` rewrites the tiny model's weights so that chosen tokens (control tokens,
padding) rank first, in a chosen order, at every position whose input is a text token: the situation
the engine's unsayable-token mask exists for, which neither the random tiny model nor the trained
demo ever produces (docs/testing.md, "Mutation testing").

It lives beside :mod:`app.modelhub.tiny` rather than in it: the demo run is keyed on the code of
``tiny`` (:mod:`app.core.codekey`), so a variant kept there would retrain the demo whenever it changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.modelhub.tiny import TinyModel, TinySpec, build_cached, build_tiny, default_cache_dir

# How the favoured tokens are lifted (see _favour): every input embedding holds LIFT_BASE in the last
# hidden dimension, the favoured tokens LIFT_BASE + (k + 1)·LIFT_STEP for the k-th from the end.
LIFT_BASE = 1.0
LIFT_STEP = 12.0


def _favour(tensors: dict[str, np.ndarray], ids: Sequence[int], n_layers: int) -> None:
    """Make ``ids`` the top-ranked outputs, in this order, after any text token (in place).

    The model ties its output head to its input embeddings. One hidden dimension ``d`` is taken over:
    every layer's attention output and MLP down projection are zeroed in row ``d``, so the residual
    stream's component ``d`` at a text position is exactly the input token's embedding there; every
    embedding gets ``LIFT_BASE`` in ``d``, the favoured ones more. After the final RMS norm
    component ``d`` is positive, so a favoured token's logit beats every other by ``y_d · lift``
    (plus the random part, which the lift dwarfs): the tests check the ranking itself on the result.
    """
    emb = tensors["model.embed_tokens.weight"]
    d = emb.shape[1] - 1
    emb[:, d] = LIFT_BASE
    for k, tok in enumerate(reversed(list(ids))):
        emb[tok, d] = LIFT_BASE + (k + 1) * LIFT_STEP
    for i in range(n_layers):
        tensors[f"model.layers.{i}.self_attn.o_proj.weight"][d, :] = 0.0
        tensors[f"model.layers.{i}.mlp.down_proj.weight"][d, :] = 0.0


def build_tiny_favouring(tokens: Sequence[str | int], spec: TinySpec | None = None, cache_dir: Path | None = None,
                         *, force: bool = False) -> TinyModel:
    """The tiny model (``spec``) rewritten so that ``tokens`` rank first, in this order, after any text token.

    ``tokens`` are added tokens by name (``"<|vision_start|>"``) or token ids (a padding id above the
    tokenizer's vocabulary, say). The result goes through the project's own converter and is cached
    like :func:`~app.modelhub.tiny.build_tiny`: keyed on the spec, the tokens and the code of this
    module and all it imports, written under a temporary name and renamed.
    """
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from app.core.codekey import code_key

    spec = spec or TinySpec()
    favoured = hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()[:8]
    root = ((cache_dir or default_cache_dir())
            / f"qwen25vl-tiny-{spec.key()}-favour-{favoured}-{code_key('app.modelhub.tiny_variants')}")

    def write_hf(hf: Path) -> None:  # only on a cache miss
        base = build_tiny(spec, cache_dir)
        vocab = json.loads((base.hf_dir / "tokenizer.json").read_text())
        added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
        n_layers = json.loads((base.hf_dir / "config.json").read_text())["text_config"]["num_hidden_layers"]
        weights = base.hf_dir / "model.safetensors"
        with safe_open(weights, "np") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k).copy() for k in f.keys()}  # noqa: SIM118 - safe_open is no mapping
        n_vocab = tensors["model.embed_tokens.weight"].shape[0]
        ids = []
        for t in tokens:
            tid = added.get(t) if isinstance(t, str) else t
            if tid is None or not 0 <= tid < n_vocab:
                raise ValueError(f"{t!r} is not an added token or a token id of the tiny model (vocabulary {n_vocab})")
            ids.append(tid)
        if len(set(ids)) != len(ids):
            raise ValueError(f"favoured tokens repeat: {list(tokens)}")
        _favour(tensors, ids, n_layers)
        shutil.copytree(base.hf_dir, hf, ignore=shutil.ignore_patterns("*.safetensors"))
        save_file(tensors, hf / "model.safetensors", metadata=metadata)

    return build_cached(root, write_hf, force=force)
