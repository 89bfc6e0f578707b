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
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.atomic import write_json_atomic
from app.modelhub.validate import ModelFileError, check_pair, find_mmproj


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
    env = os.environ.get("DUET_DATA_DIR")
    if env:
        return Path(env) / "models"
    import platformdirs

    return Path(platformdirs.user_data_dir("duet")) / "models"


class ModelLibrary:
    """``library.json`` in ``root`` lists the entries; the files live in ``root/<name>/``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_root()
        self.index = self.root / "library.json"

    def entries(self) -> list[ModelEntry]:
        """The user's entries, then the bundled demo model when the user has no ``demo`` of their own."""
        user = self.user_entries()
        if not any(e.name == "demo" for e in user):
            builtin = builtin_demo_entry()
            if builtin is not None:
                user.append(builtin)
        return user

    def user_entries(self) -> list[ModelEntry]:
        """Only what ``library.json`` lists (what :meth:`add` and :meth:`remove` manage)."""
        if not self.index.exists():
            return []
        try:
            raw = json.loads(self.index.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            corrupt = self.index.with_suffix(f".corrupt-{int(time.time())}")
            os.replace(self.index, corrupt)
            return []
        out = []
        for r in raw.get("models", []):
            out.append(ModelEntry(r["name"], Path(r["model"]), Path(r["mmproj"]), r.get("source", "imported"),
                                  r.get("added", 0.0), r.get("notes", "")))
        return out

    def get(self, name: str) -> ModelEntry | None:
        return next((e for e in self.entries() if e.name == name), None)

    def _save(self, entries: list[ModelEntry]) -> None:
        write_json_atomic(self.index, {"models": [e.to_json() for e in entries]})

    def add(self, name: str, model: Path | str, mmproj: Path | str, *, source: str = "imported",
            copy: bool = True, notes: str = "", replace: bool = False) -> ModelEntry:
        """Validate the pair, optionally copy it into the library, and record it under ``name``."""
        check_pair(model, mmproj)
        if not name or "/" in name or name in ("tiny", "demo") and source not in ("tiny", "demo"):
            raise ModelFileError(f"{name!r}: not a usable model name")
        existing = self.user_entries()
        if any(e.name == name for e in existing) and not replace:
            raise ModelFileError(f"a model named {name!r} is already in the library")
        model, mmproj = Path(model), Path(mmproj)
        if copy:
            dest = self.root / name
            dest.mkdir(parents=True, exist_ok=True)
            for src in (model, mmproj):
                tmp = dest / f".{src.name}.partial"
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest / src.name)
            model, mmproj = dest / model.name, dest / mmproj.name
        entry = ModelEntry(name, model.resolve(), mmproj.resolve(), source, time.time(), notes)
        self._save([e for e in existing if e.name != name] + [entry])
        return entry

    def remove(self, name: str, delete_files: bool = False) -> None:
        entries = self.user_entries()
        entry = next((e for e in entries if e.name == name), None)
        if entry is None and name == "demo" and builtin_demo_entry() is not None:
            raise ModelFileError("'demo' is the demo model built into Duet; it is read-only and cannot be removed")
        if entry is None:
            raise ModelFileError(f"no model named {name!r} in the library")
        self._save([e for e in entries if e.name != name])
        if delete_files and entry.model.parent == self.root / name:
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
        names = ", ".join(e.name for e in lib.entries()) or "none"
        raise ModelFileError(f"{spec}: no such file, and no library model of that name (library: {names})")
    mm = Path(mmproj) if mmproj else find_mmproj(path)
    if mm is None:
        raise ModelFileError(f"{path}: no mmproj-*.gguf found beside it; pass --mmproj")
    return path, mm
