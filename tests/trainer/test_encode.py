"""Encoding: piecewise tokenization equals the whole chat's, and only assistant turns are trained."""

from __future__ import annotations

import numpy as np

from app.core import protocol
from app.trainer.data import Dialogue, DialogueTurn
from app.trainer.encode import Encoder


def test_encoding_masks_everything_but_assistant_turns(tiny_model):
    enc = Encoder(tiny_model.hf_dir)
    img = np.zeros((56, 56, 3), np.uint8)
    d = Dialogue("x", [DialogueTurn(2.0, [img, img], "What?"), DialogueTurn(4.0, [img, img], "", "A red circle.")])
    e = enc.encode(d)
    text = (protocol.system_turn() + protocol.user_turn(2, "What?", protocol.hf_image_placeholder(4))
            + protocol.assistant_prefix() + protocol.assistant_tail(protocol.NO_REPLY)
            + protocol.user_turn(2, "", protocol.hf_image_placeholder(4)) + protocol.assistant_prefix()
            + protocol.assistant_tail("A red circle."))
    whole = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert e.input_ids.tolist() == whole  # piecewise == whole-string tokenization
    trained = enc.tokenizer.decode([t for t, lab in zip(e.input_ids.tolist(), e.labels.tolist(), strict=True)
                                    if lab != -100])
    assert trained == "NO REPLY<|im_end|>A red circle.<|im_end|>"
    assert e.pixel_values.shape[0] == 4 * 16 and e.image_grid_thw.shape == (4, 3)
    p = enc.prompt(d, 1, [enc.text_ids(protocol.NO_REPLY) + [enc.im_end]])
    assert enc.tokenizer.decode(p.input_ids.tolist()).endswith("<|im_start|>assistant\n")
