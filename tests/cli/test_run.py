"""`duet run` end to end on a real video with the tiny model, and its refusal of bad input."""

from __future__ import annotations

import json

from app.cli import main as duet
from app.core.textsafe import terminal_safe


def test_duet_run_writes_protocol_jsonl(tiny_model, tree_avi, tmp_path, capsys):
    out = tmp_path / "run.jsonl"
    rc = duet(["run", "--source", str(tree_avi), "--model", str(tiny_model.model), "--fast", "--n-ctx", "4096",
               "--interval", "0.5", "--frames-per-turn", "1", "--tokens-per-frame", "64", "--talkativeness", "2",
               "--max-new-tokens", "8", "--ask", "What is moving?", "--ask-at", "3:And now?", "--max-turns", "12",
               "--jsonl", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["turn"] for r in rows] == list(range(12))
    assert [r["time"] for r in rows] == [0.5 * (i + 1) for i in range(12)]  # 1 frame × 0.5 s per turn
    assert [r["frame_times"] for r in rows] == [[0.5 * (i + 1)] for i in range(12)]
    assert rows[0]["question"] == "What is moving?" and rows[5]["question"] == "And now?"
    assert all(r["kv_cells"] > 0 and r["timings_ms"]["total"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "[00:00] (you) What is moving?" in printed  # 0.5 s rounds to 00:00
    spoken = [r for r in rows if not r["silent"]]
    assert spoken, "talkativeness 2 makes the tiny model speak: the printed replies are checked below"
    for r in spoken:
        assert terminal_safe(r["text"].strip()) in printed  # printed without control characters


def test_duet_run_bad_inputs(tiny_model, tree_avi, tmp_path, capsys):
    assert duet(["run", "--source", str(tmp_path / "missing.mp4"), "--model", str(tiny_model.model)]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 4096)
    assert duet(["run", "--source", str(junk), "--model", str(tiny_model.model)]) == 2
    assert "junk.avi" in capsys.readouterr().err
    assert duet(["run", "--source", "scren:1", "--model", str(tiny_model.model)]) == 2
    assert "unknown source kind" in capsys.readouterr().err
    assert duet(["run", "--source", str(tree_avi), "--model", str(tmp_path / "none.gguf")]) == 2
    assert "none.gguf" in capsys.readouterr().err
