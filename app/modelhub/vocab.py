"""The GGUF vocabulary of a Hugging Face byte-level BPE tokenizer (``tokenizer.json``), for the converter.

Read from the JSON itself so that freshly trained tokenizers convert too (llama.cpp's own converter
rejects a pre-tokenizer hash it does not know); docs/llamacpp.md §Conversion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf

from app.core.bounded import read_regular_text
from app.modelhub.errors import ConversionError

TOKENIZER_MAX_BYTES = 64 * 2**20  # Qwen2.5's tokenizer.json is 7 MB; a FIFO or /dev/zero is refused unread


# ---------------------------------------------------------------------------------------------
@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    ids: dict[str, int]  # added tokens by text
    chat_template: str | None


def load_vocab(hf_dir: Path, vocab_size: int) -> Vocab:
    path = hf_dir / "tokenizer.json"
    if not path.exists():
        raise ConversionError(f"{path}: missing; the tokenizer is required to build the GGUF vocabulary")
    try:
        tj = json.loads(read_regular_text(path, TOKENIZER_MAX_BYTES))
        model = tj["model"]
        if model.get("type") != "BPE":
            raise ConversionError(f"{path}: tokenizer model is {model.get('type')}, expected byte-level BPE")
        vocab: dict[str, int] = dict(model["vocab"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        added = tj.get("added_tokens", [])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(f"{path}: malformed tokenizer ({e})") from e
    reverse = {i: t for t, i in vocab.items()}
    special: dict[int, bool] = {}
    for a in added:
        reverse[a["id"]] = a["content"]
        special[a["id"]] = bool(a.get("special"))
    if max(reverse) >= vocab_size:
        raise ConversionError(f"{path}: token id {max(reverse)} ≥ vocab_size {vocab_size} in config.json")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    template = None
    tc = hf_dir / "tokenizer_config.json"
    if tc.exists():
        template = json.loads(read_regular_text(tc, TOKENIZER_MAX_BYTES)).get("chat_template")
    ct = hf_dir / "chat_template.jinja"
    if template is None and ct.exists():
        template = read_regular_text(ct, TOKENIZER_MAX_BYTES)
    ctj = hf_dir / "chat_template.json"
    if template is None and ctj.exists():
        template = json.loads(read_regular_text(ctj, TOKENIZER_MAX_BYTES)).get("chat_template")
    ids = {a["content"]: a["id"] for a in added}
    for need in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"):
        if need not in ids:
            raise ConversionError(f"{path}: Qwen special token {need} is missing")
    return Vocab(tokens, [int(t) for t in types], merges, ids, template)
