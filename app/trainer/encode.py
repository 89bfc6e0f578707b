"""Dialogues → token ids, labels and pixel values, with the model's own tokenizer and image processor.

Only the assistant turns are trained (``labels`` is -100 elsewhere); the chat strings are those of
``app.core.protocol``, so what is trained is byte for byte what the engine feeds at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.core import protocol
from app.trainer.dialogue import Dialogue


@dataclass
class Encoded:
    """One dialogue as model inputs: ``labels`` is -100 everywhere but trained assistant tokens."""

    input_ids: Any  # LongTensor [T]
    labels: Any  # LongTensor [T]
    pixel_values: Any | None  # FloatTensor [patches, C·t·p·p]
    image_grid_thw: Any | None  # LongTensor [n_images, 3]
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each target

    @property
    def n_target_tokens(self) -> int:
        return int((self.labels != -100).sum())

    def model_inputs(self, image_token_id: int, device: Any = None) -> dict[str, Any]:
        import torch

        ids = self.input_ids.unsqueeze(0)
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                               "mm_token_type_ids": (ids == image_token_id).long()}
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
            out["image_grid_thw"] = self.image_grid_thw
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out


class Encoder:
    """Turns dialogues into token ids with the model's tokenizer and the PIL image processor.

    Text pieces are tokenized separately at turn boundaries; the Qwen2 split regex never merges
    across ``\\n`` or added tokens, so this equals tokenizing the whole rendered chat (checked in
    tests) while letting us mark the assistant tokens exactly.
    """

    def __init__(self, hf_dir: str | Path) -> None:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
        tid = self.tokenizer.convert_tokens_to_ids
        self.image_pad = tid(protocol.IMAGE_PAD)
        self.vision_start = tid(protocol.VISION_START)
        self.vision_end = tid(protocol.VISION_END)
        self.im_end = tid(protocol.IM_END)
        self._text_cache: dict[str, list[int]] = {}
        self._image_cache: dict[int, tuple[Any, Any, np.ndarray]] = {}

    def text_ids(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._text_cache) < 4096:
                self._text_cache[text] = ids
        return list(ids)

    def image(self, img: np.ndarray) -> tuple[Any, Any]:
        """(pixel_values [patches, dim], grid_thw [3]) of one fitted frame, cached by object identity."""
        hit = self._image_cache.get(id(img))
        if hit is not None and hit[2] is img:
            return hit[0], hit[1]
        from PIL import Image

        proc = self.image_processor(images=[Image.fromarray(img)], return_tensors="pt")
        pv, grid = proc["pixel_values"], proc["image_grid_thw"][0]
        self._image_cache[id(img)] = (pv, grid, img)  # keeps img alive, so the id stays unique
        return pv, grid

    def image_ids(self, grid: Any) -> list[int]:
        n = int(grid.prod()) // (self.image_processor.merge_size ** 2)
        return [self.vision_start] + [self.image_pad] * n + [self.vision_end]

    def encode(self, d: Dialogue, targets: Sequence[list[int] | None] | None = None) -> Encoded:
        """All turns of ``d``; ``targets[i]`` (token ids) overrides turn i's text (GRPO rollouts).

        A target given as ids is used verbatim (the sampled tokens, so log-probs are of what was
        sampled) and gets ``<|im_end|>`` appended unless it was cut at the length limit, in which
        case the ``<|im_end|>`` that the next prompt carries is not trained.
        """
        import torch

        ids: list[int] = []
        labels: list[int] = []
        pvs: list[Any] = []
        grids: list[Any] = []
        spans: list[tuple[int, int]] = []

        def add(toks: list[int], train: bool) -> None:
            ids.extend(toks)
            labels.extend(toks if train else [-100] * len(toks))

        add(self.text_ids(protocol.system_turn(d.system)), False)
        for i, turn in enumerate(d.turns):
            add(self.text_ids(f"{protocol.IM_START}user\n"), False)
            for img in turn.images:
                pv, grid = self.image(img)
                pvs.append(pv)
                grids.append(grid)
                add(self.image_ids(grid), False)
            add(self.text_ids(f"{turn.user_text}{protocol.IM_END}\n{protocol.IM_START}assistant\n"), False)
            start = len(ids)
            if targets is not None and targets[i] is not None:
                toks = list(targets[i] or [])
                closed = bool(toks) and toks[-1] == self.im_end
                add(toks, turn.train)
                if not closed:
                    add([self.im_end], False)
                spans.append((start, len(ids) - (0 if closed else 1)))
            else:
                add(self.text_ids(turn.target) + [self.im_end], turn.train)
                spans.append((start, len(ids)))
            add(self.text_ids("\n"), False)
        pixel_values = torch.cat(pvs) if pvs else None
        grid_thw = torch.stack(grids) if grids else None
        return Encoded(torch.tensor(ids), torch.tensor(labels), pixel_values, grid_thw, spans)

    def prompt(self, d: Dialogue, upto: int, replies: Sequence[list[int]]) -> Encoded:
        """The generation prompt for turn ``upto``: turns before it with ``replies`` (ids), then its user turn."""
        head = replace(d, turns=d.turns[: upto + 1])
        enc = self.encode(head, targets=[*replies, []])
        # drop the last turn's (empty) reply, its <|im_end|> and the "\n": end at "<|im_start|>assistant\n"
        cut = enc.assistant_spans[-1][0]
        enc.input_ids = enc.input_ids[:cut]
        enc.labels = enc.labels[:cut]
        enc.assistant_spans = enc.assistant_spans[:-1]
        return enc
