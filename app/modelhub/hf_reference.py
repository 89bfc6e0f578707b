"""Running a Qwen2.5-VL checkpoint with transformers: the reference the GGUF path is checked against.

Needs the ``train`` extra (torch, transformers). Frames are given already resized to multiples of
28 (``app.capture.resize.fit_frame``), so transformers' own resize is the identity and both
libraries see identical pixels. transformers' full processor needs torchvision, whose PyPI wheels do
not match the pinned CPU torch, so the PIL image processor is used directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.core import protocol

MARKER = "<__media__>"  # same marker text libmtmd uses; replaced by the expanded image tokens here


class HFReference:
    def __init__(self, hf_dir: Path | str, dtype: str = "float32") -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            hf_dir, dtype=getattr(torch, dtype)).eval()
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(hf_dir)
        self.image_token_id = self.model.config.image_token_id

    def inputs(self, text: str, images: Sequence[np.ndarray]) -> dict:
        """Tokenized inputs for ``text`` whose ``MARKER``s stand for ``images`` in order."""
        from PIL import Image

        torch = self.torch
        if text.count(MARKER) != len(images):
            raise ValueError(f"{text.count(MARKER)} markers for {len(images)} images")
        pieces = text.split(MARKER)
        out = {}
        if images:
            proc = self.image_processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
            grid = proc["image_grid_thw"]
            merge = self.image_processor.merge_size ** 2
            expanded = pieces[0]
            for i, g in enumerate(grid):
                expanded += protocol.hf_image_placeholder(int(g.prod()) // merge) + pieces[i + 1]
            text = expanded
            out["pixel_values"] = proc["pixel_values"]
            out["image_grid_thw"] = grid
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out["input_ids"] = ids
        out["attention_mask"] = torch.ones_like(ids)
        out["mm_token_type_ids"] = (ids == self.image_token_id).long()
        return out

    def logits(self, text: str, images: Sequence[np.ndarray] = ()) -> np.ndarray:
        """Next-token logits after ``text`` (float32, shape [vocab])."""
        with self.torch.no_grad():
            out = self.model(**self.inputs(text, images))
        return out.logits[0, -1].float().numpy()
