"""Names from outside that become paths (refused unless they stay inside their folder); unusable folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.paths import UnsafeName, folder_problem, plain_relative_name


@pytest.mark.parametrize("name", ["model.gguf", "sub/model.gguf", "a..b.gguf", "..hidden", "x/y/z.json",
                                  "é.gguf"])
def test_plain_relative_names_are_kept_as_they_are(name):
    assert plain_relative_name(name) == name


@pytest.mark.parametrize(("name", "reason"), [
    ("../x.gguf", "an empty, '.' or '..' part"),
    ("a/../../x", "an empty, '.' or '..' part"),
    ("a//b", "an empty, '.' or '..' part"),
    ("a/", "an empty, '.' or '..' part"),
    (".", "an empty, '.' or '..' part"),
    ("/etc/passwd", "an absolute path"),
    ("C:x.gguf", "an absolute path"),
    ("..\\x.gguf", "a backslash"),
    ("a\x00b", "a control character"),
    ("a\nb", "a control character"),
    ("a:b", "an absolute path"),  # a drive letter on Windows
    ("model.gguf:stream", "a ':'"),  # an NTFS stream
    ("", "not a non-empty string"),
    (None, "not a non-empty string"),
])
def test_names_that_leave_their_folder_are_refused(name, reason):
    with pytest.raises(UnsafeName) as e:
        plain_relative_name(name, "file name")
    assert reason in e.value.reason and e.value.name == name
    assert str(e.value).startswith(f"file name {name!r} is not a plain relative name")


def test_folder_problem_names_the_file_in_the_way(tmp_path: Path, monkeypatch):
    assert folder_problem(tmp_path / "a" / "b") is None  # missing folders can be made
    f = tmp_path / "data"
    f.write_text("x")
    monkeypatch.setenv("DUET_DATA_DIR", str(f))
    assert folder_problem(f / "models", env="DUET_DATA_DIR") == (
        f"{f} is a file, not a folder, so {f / 'models'} cannot be used; "
        "point DUET_DATA_DIR at a folder (or unset it)")
    assert folder_problem(f / "models").endswith("move that file away")


def test_user_dir_is_the_one_lookup_of_duet_data_dir(tmp_path, monkeypatch):
    """Every store (models, sessions, speech, trainer runtime, the server's key) finds its folder the same way."""
    from app.core.paths import user_dir
    from app.core.sessions import default_sessions_root
    from app.engine.serve_policy import default_key_file
    from app.modelhub.library import default_root as models_root
    from app.speech.stt import models_dir
    from app.trainer.feedback_job import data_root
    from app.trainer.runtime import default_root as runtime_root

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))
    assert [models_root(), default_sessions_root(), models_dir(), runtime_root(), default_key_file(), data_root()] \
        == [tmp_path / "models", tmp_path / "sessions", tmp_path / "speech", tmp_path / "trainer-runtime",
            tmp_path / "serve-api-key", tmp_path]
    monkeypatch.delenv("DUET_DATA_DIR")
    assert user_dir("models").name == "models" and user_dir("models") != tmp_path / "models"
