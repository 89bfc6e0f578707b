"""The user's local model library: named GGUF + mmproj pairs under the data directory.

A model reference anywhere in Duet (``--model``, the settings, the trainer's export) is resolved here:
a library name, ``tiny`` (the built-in tiny test model), ``demo`` (the offline demo model), or a path
to a text GGUF whose mmproj sits beside it.

The app ships the trained demo model in ``assets/models/demo`` (:mod:`app.core.assets`). Until the
user trains or imports their own ``demo``, the library lists that bundled pair as a read-only entry
of source ``builtin``, so a fresh install narrates offline with nothing trained or downloaded. It is
never written into ``library.json`` and cannot be removed; a user ``demo`` simply takes its place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.atomic import install_pair, write_json_atomic
from app.core.bounded import read_regular_text
from app.core.paths import folder_problem, user_dir
from app.modelhub.validate import ModelFileError, check_pair, find_mmproj

log = logging.getLogger("duet.library")
_REPORTED: set[tuple[str, int]] = set()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
INDEX_MAX_BYTES = 16 * 2**20  # library.json lists names and paths; a larger file is not one


def check_name(name: object, *, builtin_ok: bool = False) -> str:
    """A library name is also a folder name under the library: no ``.``/``..``, slashes or odd characters."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise ModelFileError(f"{name!r}: not a usable model name; use 1–64 letters, digits, '.', '_', '+' or '-', "
                             "starting with a letter or digit")
    if name in ("tiny", "demo") and not builtin_ok:
        raise ModelFileError(f"{name!r} is reserved for the built-in model; choose another name")
    return name


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model: Path
    mmproj: Path
    source: str = "imported"  # imported | converted | trained | tiny | demo | downloaded | builtin
    added: float = 0.0
    notes: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["model"], d["mmproj"] = str(self.model), str(self.mmproj)
        return d


def default_root() -> Path:
    return user_dir("models")


class ModelLibrary:
    """``library.json`` in ``root`` lists the entries; the files live in ``root/<name>/``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_root()
        self.index = self.root / "library.json"
        self.recovered_from: Path | None = None  # where a damaged library.json was moved, for the UI

    def root_problem(self) -> str | None:
        """Why the library folder cannot exist (``DUET_DATA_DIR`` is a file, …), or None.

        Why ask: a library under a file reads as empty — "no models" — when the truth is that the
        data folder is unusable; the CLI and the window say this instead.
        """
        problem = folder_problem(self.root, env="DUET_DATA_DIR")
        return f"the model library cannot be used: {problem}" if problem else None

    def entries(self) -> list[ModelEntry]:
        """The user's entries, then the bundled demo model when the user has no ``demo`` of their own."""
        user = self.user_entries()
        if not any(e.name == "demo" for e in user):
            builtin = builtin_demo_entry()
            if builtin is not None:
                user.append(builtin)
        return user

    def user_entries(self) -> list[ModelEntry]:
        """Only what ``library.json`` lists (what :meth:`add` and :meth:`remove` manage). A damaged
        ``library.json`` is set aside (``recovered_from``) and the user told; an entry of the wrong shape
        is skipped with a warning. Neither stops the app."""
        if not self.index.exists():
            problem = self.root_problem()
            if problem and (problem, -1) not in _REPORTED:
                _REPORTED.add((problem, -1))
                log.warning("%s", problem)
            return []
        try:
            raw = json.loads(read_regular_text(self.index, INDEX_MAX_BYTES))
            if not isinstance(raw, dict) or not isinstance(raw.get("models", []), list):
                raise ValueError("expected {\"models\": [...]}")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            corrupt = self.index.with_name(f"library.corrupt-{int(time.time())}.json")
            try:
                os.replace(self.index, corrupt)
            except OSError:
                corrupt = self.index
            self.recovered_from = corrupt
            log.warning("the model library index %s is damaged (%s); set aside as %s. Re-import your models "
                        "with `duet models import` (their files are untouched)", self.index, e, corrupt.name)
            return []
        out = []
        for i, r in enumerate(raw.get("models", [])):
            try:
                if not isinstance(r, dict):
                    raise ValueError("not an object")
                name, model, mmproj = r["name"], r["model"], r["mmproj"]
                if not all(isinstance(v, str) for v in (name, model, mmproj)):
                    raise ValueError("name, model and mmproj must be strings")
                check_name(name, builtin_ok=True)
                source = r.get("source", "imported")
                added = r.get("added", 0.0)
                notes = r.get("notes", "")
                out.append(ModelEntry(name, Path(model), Path(mmproj), source if isinstance(source, str) else "imported",
                                      float(added) if isinstance(added, (int, float)) else 0.0,
                                      notes if isinstance(notes, str) else ""))
            except (KeyError, ValueError) as e:
                key = (str(self.index), i)
                if key not in _REPORTED:
                    _REPORTED.add(key)
                    log.warning("%s: entry %d skipped (%s)", self.index, i + 1, e)
        return out

    def get(self, name: str) -> ModelEntry | None:
        return next((e for e in self.entries() if e.name == name), None)

    def _save(self, entries: list[ModelEntry]) -> None:
        write_json_atomic(self.index, {"models": [e.to_json() for e in entries]})

    def add(self, name: str, model: Path | str, mmproj: Path | str, *, source: str = "imported",
            copy: bool = True, notes: str = "", replace: bool = False) -> ModelEntry:
        """Validate the pair, optionally copy it into the library, and record it under ``name``."""
        check_name(name, builtin_ok=source in ("tiny", "demo"))
        problem = self.root_problem()
        if problem:
            raise ModelFileError(problem)
        check_pair(model, mmproj)
        existing = self.user_entries()
        if any(e.name == name for e in existing) and not replace:
            raise ModelFileError(f"a model named {name!r} is already in the library")
        model, mmproj = Path(model), Path(mmproj)
        if copy:
            dest = self.root / name
            created = not dest.exists()
            dest.mkdir(parents=True, exist_ok=True)
            staged = []
            try:  # both copies complete before either is put in place: a pair or nothing
                for src in (model, mmproj):
                    tmp = dest / f".{src.name}.partial"
                    staged.append((tmp, dest / src.name))
                    shutil.copyfile(src, tmp)
                install_pair(staged)
            except BaseException:
                for tmp, _ in staged:
                    tmp.unlink(missing_ok=True)
                if created:
                    shutil.rmtree(dest, ignore_errors=True)
                raise
            model, mmproj = dest / model.name, dest / mmproj.name
        entry = ModelEntry(name, model.resolve(), mmproj.resolve(), source, time.time(), notes)
        self._save([e for e in existing if e.name != name] + [entry])
        return entry

    def remove(self, name: str, delete_files: bool = False) -> None:
        check_name(name, builtin_ok=True)  # a name reaches the file system below: checked before anything
        entries = self.user_entries()
        entry = next((e for e in entries if e.name == name), None)
        if entry is None and name == "demo" and builtin_demo_entry() is not None:
            raise ModelFileError("'demo' is the demo model built into Duet; it is read-only and cannot be removed")
        if entry is None:
            raise ModelFileError(f"no model named {name!r} in the library")
        self._save([e for e in entries if e.name != name])
        if delete_files and entry.model.parent == self.root / name and (self.root / name).resolve().parent == \
                self.root.resolve():
            shutil.rmtree(self.root / name, ignore_errors=True)


def builtin_demo_entry() -> ModelEntry | None:
    """The demo model bundled with the app as a read-only library entry, or None when not bundled."""
    from app.core.assets import bundled_demo

    b = bundled_demo()
    if b is None:
        return None
    notes = f"built into Duet (recipe {b.provenance.get('recipe', '?')}); read-only"
    return ModelEntry("demo", b.model, b.mmproj, "builtin", 0.0, notes)


def resolve_model(spec: str, mmproj: str | None = None, library: ModelLibrary | None = None) -> tuple[Path, Path]:
    """Turn a user's model reference into a (model, mmproj) pair of existing files."""
    if spec == "tiny":
        from app.modelhub.tiny import build_tiny

        t = build_tiny()
        return t.model, t.mmproj
    lib = library or ModelLibrary()
    entry = lib.get(spec)
    if entry is not None:
        return entry.model, Path(mmproj) if mmproj else entry.mmproj
    if spec == "demo":
        raise ModelFileError("this build ships no demo model and none is trained yet: run `duet train demo` "
                             "(or `make run`)")
    path = Path(spec).expanduser()
    if not path.exists():
        problem = lib.root_problem()
        if problem:
            raise ModelFileError(f"{spec}: no such file, and {problem}")
        names = ", ".join(e.name for e in lib.entries()) or "none"
        raise ModelFileError(f"{spec}: no such file, and no library model of that name (library: {names})")
    mm = Path(mmproj) if mmproj else find_mmproj(path)
    if mm is None:
        raise ModelFileError(f"{path}: no mmproj-*.gguf found beside it; pass --mmproj")
    return path, mm
