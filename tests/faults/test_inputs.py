"""Fault catalogue, part 1: bad sources, model files, library entries, checkpoints and recipes.

Every case runs the real ``duet`` command in-process and asserts the exact outcome: the exit code,
the message the user reads, and what is left on disk. No case may print a traceback (see conftest).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import rewrite_safetensors_header

OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")


# ---- sources ---------------------------------------------------------------------------------
def _short_video(path: Path, frames: int) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), i * 20 % 256, dtype=np.uint8))
    w.release()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


SOURCE_CASES = {
    "missing file": (lambda d: d / "nope.mp4", "Video file not found"),
    "empty file": (lambda d: _write(d / "empty.mp4", b""), "is empty (0 bytes)"),
    "a folder": (lambda d: d, "is a directory, not a video file"),
    "a still image": (lambda d: shutil.copy(OPENCV / "baboon.jpg", d / "b.jpg") and d / "b.jpg", "is a still image"),
    "a JPEG renamed .mp4": (lambda d: shutil.copy(OPENCV / "baboon.jpg", d / "b.mp4") and d / "b.mp4",
                            "holds a single frame"),
    "a 1-frame video": (lambda d: _short_video(d / "one.avi", 1), "holds a single frame"),
    "random bytes": (lambda d: _write(d / "r.mp4", os.urandom(4096)),
                     "is not a video OpenCV can decode"),
    "video shorter than one interval": (lambda d: _short_video(d / "short.avi", 5),
                                        "shorter than one interval (1 s): there is no frame to watch"),
}


@pytest.mark.parametrize("case", SOURCE_CASES)
def test_bad_video_sources(case, run, tmp_path, tiny_model, data_dir):
    make, message = SOURCE_CASES[case]
    path = make(tmp_path)
    r = run("run", "--source", path, "--model", "tiny", "--fast", "--jsonl", tmp_path / "out.jsonl")
    assert r.rc == 2, r.err
    assert message in r.err
    assert "0 turns" not in r.err  # never a quiet "success"


@pytest.mark.parametrize(("spec", "message"), [
    ("bogus:1", "unknown source kind 'bogus'"),
    ("region:0,0,0,0", "region width and height must be > 0"),
    ("region:1,2", "region needs four integers"),
    ("camera:-1", "camera index must be ≥ 0"),
    ("window:", "window: needs a title"),
    ("", "empty source"),
])
def test_bad_source_specs(spec, message, run, data_dir):
    r = run("run", "--source", spec, "--model", "tiny")
    assert (r.rc, message in r.err) == (2, True), r.err


# ---- model library ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "a/b", "../evil", "a\\b", "-x", "x.", "", "é", "a" * 65, "sp ace"])
def test_library_names_are_validated(name, run, tiny_model, data_dir):
    r = run("models", "import", "--", name, tiny_model.model, tiny_model.mmproj)
    assert r.rc == 2
    assert f"{name!r}: not a usable model name" in r.err
    assert not (data_dir / "models" / "library.json").exists()
    assert not (data_dir.parent / "evil").exists() and not (data_dir / "evil").exists()


def test_reserved_library_names(run, tiny_model, data_dir):
    r = run("models", "import", "demo", tiny_model.model, tiny_model.mmproj)
    assert (r.rc, "'demo' is reserved for the built-in model" in r.err) == (2, True)


def test_import_refuses_a_swapped_pair_and_copies_nothing(run, tiny_model, data_dir):
    r = run("models", "import", "mine", tiny_model.mmproj, tiny_model.model)
    assert r.rc == 2 and "not the text model; swap the two files" in r.err
    assert not (data_dir / "models" / "mine").exists()


DAMAGED_LIBRARIES = {
    "not JSON": b"{not json",
    "a 0xFF byte": b'{"models": [\xff]}',
    "a list": b"[]",
    "models is a string": b'{"models": "x"}',
    "empty file": b"",
}


@pytest.mark.parametrize("case", DAMAGED_LIBRARIES)
def test_a_damaged_library_index_is_set_aside_and_reported(case, run, tiny_model, data_dir):
    lib = data_dir / "models"
    lib.mkdir(parents=True)
    (lib / "library.json").write_bytes(DAMAGED_LIBRARIES[case])
    r = run("models", "list")
    assert r.rc == 0
    assert r.out.split()[:2] == ["demo", "builtin"]  # only the bundled demo: the user's entries were set aside
    assert "is damaged" in r.err and "set aside as library.corrupt-" in r.err
    aside = list(lib.glob("library.corrupt-*.json"))
    assert [p.read_bytes() for p in aside] == [DAMAGED_LIBRARIES[case]]  # kept, byte for byte
    assert not (lib / "library.json").exists()
    # The library works again at once.
    assert run("models", "import", "mine", tiny_model.model, tiny_model.mmproj).rc == 0
    assert "mine" in run("models", "list").out


def test_a_library_entry_of_the_wrong_shape_is_skipped_and_the_rest_kept(run, tiny_model, data_dir):
    lib = data_dir / "models"
    lib.mkdir(parents=True)
    good = {"name": "good", "model": str(tiny_model.model), "mmproj": str(tiny_model.mmproj)}
    bad = [{"name": 1, "model": "x", "mmproj": "y"}, {"model": "x"}, "text", {"name": "..", "model": "a",
                                                                               "mmproj": "b"}]
    (lib / "library.json").write_text(json.dumps({"models": [*bad, good]}))
    r = run("models", "list")
    assert r.rc == 0 and "good" in r.out
    assert r.err.count("skipped") == 4
    assert "entry 4 skipped ('..': not a usable model name" in r.err


def test_removing_a_dot_entry_cannot_delete_the_library(tiny_model, data_dir):
    from app.modelhub.library import ModelLibrary
    from app.modelhub.validate import ModelFileError

    lib = ModelLibrary()
    lib.add("ok", tiny_model.model, tiny_model.mmproj)
    with pytest.raises(ModelFileError, match="'.': not a usable model name"):  # checked before any lookup
        lib.remove(".", delete_files=True)
    assert (lib.root / "ok").is_dir() and lib.get("ok") is not None


# ---- checkpoints (duet models convert) --------------------------------------------------------------
def _drop_dtype(h: dict) -> None:
    name = next(k for k in h if k != "__metadata__")
    del h[name]["dtype"]


def _bad_offsets(h: dict) -> None:
    name = next(k for k in h if k != "__metadata__")
    h[name]["data_offsets"] = [10, 2]


def _wrong_span(h: dict) -> None:
    name = next(k for k in h if k != "__metadata__")
    h[name]["shape"] = [h[name]["shape"][0] * 2, *h[name]["shape"][1:]]


def _odd_dtype(h: dict) -> None:
    name = next(k for k in h if k != "__metadata__")
    h[name]["dtype"] = "F8_E4M3"


HEADER_CASES = {
    "no dtype": (_drop_dtype, "has no dtype in the header; the file is damaged"),
    "offsets reversed": (_bad_offsets, "has invalid data_offsets [10, 2]"),
    "shape does not fit the bytes": (_wrong_span, "bytes but shape"),
    "unsupported dtype": (_odd_dtype, "has unsupported dtype 'F8_E4M3'"),
    "header is a list": (lambda h: [1], "corrupt safetensors header (not a JSON object)"),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_damaged_safetensors_headers(case, run, hf_copy, tmp_path):
    edit, message = HEADER_CASES[case]
    rewrite_safetensors_header(hf_copy / "model.safetensors", edit)
    r = run("models", "convert", hf_copy, "--out", tmp_path / "o", "--name", "t")
    assert r.rc == 2 and message in r.err, r.err
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors", "..", 7])
def test_index_shards_must_be_inside_the_checkpoint(shard, run, hf_copy, tmp_path):
    (hf_copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    r = run("models", "convert", hf_copy, "--out", tmp_path / "o", "--name", "t")
    assert r.rc == 2
    assert f"shard name {shard!r} is not a file inside" in r.err


def test_a_truncated_checkpoint(run, hf_copy, tmp_path):
    p = hf_copy / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    r = run("models", "convert", hf_copy, "--out", tmp_path / "o", "--name", "t")
    assert r.rc == 2 and "truncated: tensor" in r.err


# ---- training recipes -------------------------------------------------------------------------------
RECIPE_CASES = {
    "sft.steps=-5": "sft.steps = -5 is out of range; it must be within 1–10_000_000",
    "sft.steps=0": "sft.steps = 0 is out of range",
    "sft.batch=0": "sft.batch = 0 is out of range; it must be within 1–4_096",
    "sft.ckpt_every=0": "sft.ckpt_every = 0 is out of range; it must be ≥ 1",
    "grpo.ckpt_every=0": "grpo.ckpt_every = 0 is out of range; it must be ≥ 1",
    "grpo.group=1": "grpo.group must be >= 2",
    "sft.lr=nan": "sft.lr = nan is out of range",
    "sft.lr=-1.0": "sft.lr = -1.0 is out of range",
    "grpo.temperature=0.0": "grpo.temperature = 0.0 is out of range",
    "grpo.clips_per_step=0": "grpo.clips_per_step = 0 is out of range",
    "grpo.ppo_epochs=0": "grpo.ppo_epochs = 0 is out of range",
    "sft.warmup=-1": "sft.warmup = -1 is out of range; it must be ≥ 0",
    "sft.min_lr_ratio=2.0": "sft.min_lr_ratio = 2.0 is out of range; it must be within 0–1",
    "data.variants=0": "data.variants = 0 is out of range",
    "data.interval=0.0": "data.interval must be > 0",
    "sft.stepz=3": "unknown key 'stepz'",
    "sft.steps=\"ten\"": "expected an integer, got 'ten'",
}


@pytest.mark.parametrize("override", RECIPE_CASES)
def test_recipe_values_out_of_range(override, run, tmp_path, data_dir):
    r = run("train", "sft", "models/recipes/demo.toml", "--set", override, "--set", f"out_dir=\"{tmp_path / 'o'}\"")
    assert r.rc == 2, r.out
    event = json.loads(r.out.strip().splitlines()[-1])
    assert event["event"] == "error" and event["kind"] == "config"
    assert RECIPE_CASES[override] in event["message"]
    assert not (tmp_path / "o").exists()  # refused before anything is written


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: os.mkfifo(d / "m.gguf") or d / "m.gguf", "not a regular file; expected a .gguf model file"),
    (lambda d: _write(d / "m.gguf", b"GGUF\x03\x00"), "corrupt or truncated GGUF model"),
    (lambda d: _write(d / "m.gguf", b"PK\x03\x04zip"), "not a GGUF file (bad magic)"),
])
def test_unusable_model_files(make, message, run, tmp_path, tiny_model, data_dir):
    model = make(tmp_path)
    r = run("models", "import", "x", model, tiny_model.mmproj)
    assert r.rc == 2 and message in r.err, r.err
    r = run("serve", "--model", model, "--mmproj", tiny_model.mmproj)
    assert r.rc == 2 and message in r.err, r.err


def test_an_os_error_names_the_file_without_a_traceback(run, tmp_path, data_dir):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "out.jsonl").mkdir()  # the --jsonl target is a folder: IsADirectoryError
    r = run("run", "--source", OPENCV / "vtest.avi", "--model", "tiny", "--fast", "--max-turns", "1",
            "--jsonl", ro / "out.jsonl")
    assert r.rc == 2
    assert f"duet: error: --jsonl {ro / 'out.jsonl'} is a folder, not a regular file" in r.err
