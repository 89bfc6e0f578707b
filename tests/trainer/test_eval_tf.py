"""The frames-matter check: frames are swapped between clips of the same task, targets are kept."""

from __future__ import annotations

import numpy as np

from app.trainer.data import Dialogue, DialogueTurn
from app.trainer.eval_tf import shuffled_frames


def _dlg(name: str, value: int, n: int = 3) -> Dialogue:
    img = np.full((28, 28, 3), value, np.uint8)
    return Dialogue(name, [DialogueTurn(float(i + 1), [img], "q" if i == 0 else "", f"{name} {i}") for i in range(n)])


def test_frames_move_between_clips_of_a_task_and_targets_stay():
    ds = [_dlg("heldout/colour-easy-000", 1), _dlg("heldout/colour-easy-001", 2), _dlg("heldout/appear-easy-000", 3),
          _dlg("heldout/appear-easy-001", 4, n=2)]
    out = shuffled_frames(ds)
    assert [d.id for d in out] == [d.id for d in ds]
    assert [[t.target for t in d.turns] for d in out] == [[t.target for t in d.turns] for d in ds]
    assert int(out[0].turns[0].images[0][0, 0, 0]) == 2 and int(out[1].turns[0].images[0][0, 0, 0]) == 1
    assert int(out[2].turns[2].images[0][0, 0, 0]) == 4  # a shorter donor lends its last turn's frames
    assert int(out[3].turns[1].images[0][0, 0, 0]) == 3
    assert int(ds[0].turns[0].images[0][0, 0, 0]) == 1  # the input is not modified
