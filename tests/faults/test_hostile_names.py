"""Fault catalogue, part 7: names from outside that would become paths outside their folder.

A model hub's file names and the names a user types (``--name``, a model to remove, a session id)
are joined to one of Duet's folders. Each case runs the real ``duet`` command against a real
loopback stand-in hub (huggingface_hub's own client, real HTTP) and asserts that the name is refused
before any file operation: nothing written, deleted or left outside the folder, nothing in the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.modelhub.library import ModelLibrary
from tests.modelhub.hub_server import COMMIT, hub_for_duet


@pytest.fixture
def hub(tiny_model, data_dir, monkeypatch):
    """The stand-in hub, empty; HF_ENDPOINT points at it and offline mode is off."""
    with hub_for_duet({}, monkeypatch, timeout=5) as h:
        yield h


def _files_outside(root: Path, data_dir: Path) -> set[Path]:
    """Every file under ``root`` that is not inside the library folder (where a pull may write)."""
    library = data_dir / "models"
    return {p for p in root.rglob("*") if p.is_file() and library not in p.parents}


# name in the listing (``{victim}``: an existing file's absolute path), the URL path a client requests for it
HUB_NAMES = {
    "../ up and out of the pull folder": ("../../../../evil-q8_0.gguf", "/evil-q8_0.gguf"),
    "an absolute path at an existing file": ("{victim}", None),
    "a subfolder, then up and out": ("sub/../../../../../evil-q8_0.gguf", "/evil-q8_0.gguf"),
    "backslashes (Windows separators)": ("..\\..\\..\\..\\evil-q8_0.gguf", None),
    "a NUL byte": ("evil\x00-q8_0.gguf", None),
    "a drive letter": ("C:evil-q8_0.gguf", None),
}


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-intermediate"])
@pytest.mark.parametrize("case", HUB_NAMES)
def test_a_hub_file_name_outside_the_pull_folder_is_refused_before_any_file_operation(
        case, keep, hub, run, tiny_model, data_dir, tmp_path):
    victim = tmp_path / "victim-q8_0.gguf"
    victim.write_bytes(b"the user's own file")
    name, url_path = HUB_NAMES[case]
    name = name.format(victim=victim)
    model = tiny_model.model.read_bytes()
    hub.repos["evil/gguf"] = {name: model, "mmproj-tiny-f32.gguf": tiny_model.mmproj.read_bytes()}
    if url_path:
        hub.by_path[url_path] = (name, model)  # a hostile hub answers the normalised URL too
    before = _files_outside(tmp_path, data_dir)
    keep_flag = ["--keep-intermediate"] if keep else []
    args = ["models", "pull", "evil/gguf", "--quant", "Q8_0", "--json", *keep_flag]
    r = run(*args)
    assert r.rc == 2, r.err
    assert f"evil/gguf: the hub lists a file named {name!r}, which is not a plain relative name" in r.err
    assert "Duet refuses to download it" in r.err
    assert victim.read_bytes() == b"the user's own file"  # not deleted by the size check, not overwritten
    assert _files_outside(tmp_path, data_dir) == before  # nothing planted anywhere outside the library
    fetched = [q for q in hub.faults.requests
               if "/resolve/" in q or q.startswith(("HEAD /evil-", "GET /evil-"))]
    assert fetched == []
    assert ModelLibrary().user_entries() == []


def test_a_saved_listing_with_a_bad_name_is_refused_on_resume(hub, run, tiny_model, data_dir, tmp_path):
    """A pull interrupted under an older Duet kept the hub's listing in its state: it is checked again."""
    hub.repos["evil/gguf"] = {"m-q8_0.gguf": b"x", "mmproj-m-f16.gguf": b"y"}
    work = data_dir / "models" / ".pulls" / "evil--gguf@main"
    work.mkdir(parents=True)
    listing = [{"name": "../../../../evil-q8_0.gguf", "size": 3, "sha256": "0" * 64, "blob_id": None},
               {"name": "mmproj-m-f16.gguf", "size": 1, "sha256": "0" * 64, "blob_id": None}]
    (work / "state.json").write_text(json.dumps({"version": 1, "repo": "evil/gguf", "revision": "main",
                                                 "commit": COMMIT, "listing": listing, "verified": []}))
    hub.by_path["/evil-q8_0.gguf"] = ("../../../../evil-q8_0.gguf", b"bad")
    r = run("models", "pull", "evil/gguf", "--quant", "Q8_0", "--json")
    assert r.rc == 2
    assert "lists a file named '../../../../evil-q8_0.gguf', which is not a plain relative name" in r.err
    assert not list(tmp_path.rglob("*evil-q8_0.gguf*"))  # neither the file nor a partial download of it
    assert hub.faults.requests == []


def test_pull_name_is_checked_before_anything_is_fetched(hub, run, tiny_model, data_dir, tmp_path):
    """``--name /elsewhere/x`` wrote /elsewhere/x.gguf, and only then was refused by the library."""
    hub.repos["duet/tiny-gguf"] = {"tiny-f32.gguf": tiny_model.model.read_bytes(),
                                   "mmproj-tiny-f32.gguf": tiny_model.mmproj.read_bytes()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in (str(elsewhere / "x"), "../x", "x.", "a\\b", "demo"):
        r = run("models", "pull", "duet/tiny-gguf", "--quant", "F16", "--name", name, "--json")
        assert r.rc == 2, name
        assert f"--name {name!r}" in r.err, r.err
        assert list(elsewhere.iterdir()) == [] and not (tmp_path / "x.gguf").exists()
    assert hub.faults.requests == []  # refused before the hub was even asked
    assert not list((data_dir / "models").rglob("*.gguf"))


@pytest.mark.parametrize("name", ["..", "../models", "/etc", "a/b", "x\x00"])
def test_models_remove_checks_the_name_first(name, run, tiny_model, data_dir):
    assert run("models", "import", "ok", tiny_model.model, tiny_model.mmproj).rc == 0
    r = run("models", "remove", "--", name)
    assert r.rc == 2 and f"{name!r}: not a usable model name" in r.err
    assert (data_dir / "models" / "ok").is_dir() and ModelLibrary().get("ok") is not None


TRAIN_NAMES = {
    "ending in a dot (the library refused it only after training)": ("mine.", "--name 'mine.'"),
    "a trailing newline": ("mine\n", "--name 'mine\\n'"),
    "a path": ("../../x", "--name '../../x'"),
}


def _errors(out: str) -> list[str]:
    """The messages of the error events ``duet train`` prints (one JSON object a line)."""
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e["message"] for e in events if e.get("event") == "error"]


@pytest.mark.parametrize("case", TRAIN_NAMES)
def test_train_feedback_name_is_checked_first(case, run, data_dir):
    name, message = TRAIN_NAMES[case]
    r = run("train", "feedback", "--base", "demo", "--name", name, "--all")
    assert r.rc == 2
    assert len(_errors(r.out)) == 1 and _errors(r.out)[0].startswith(message), r.out
    assert not (data_dir / "train").exists()


@pytest.mark.parametrize("sid", ["..", ".", "../sessions", "/tmp", "a\\b", "a\x00b"])
def test_session_ids_are_checked_before_they_become_paths(sid, run, data_dir):
    (data_dir / "sessions").mkdir(parents=True)
    (data_dir / "events.jsonl").write_text("")  # `..` would have found the data folder as a "session"
    r = run("train", "feedback", "--base", "demo", "--name", "mine", "--sessions", sid, "--steps", "0")
    assert r.rc == 2
    assert _errors(r.out) == [f"no saved session {sid!r}: that is not a session id (ids look like "
                              "20260101-120000-ab12; see `duet sessions list`)"]
    for action in (["show", sid], ["export", sid], ["feedback", sid, "--at", "1", "--kind", "good"]):
        r = run("sessions", *action)
        assert r.rc == 2 and f"no saved session {sid!r}: that is not a session id" in r.err
