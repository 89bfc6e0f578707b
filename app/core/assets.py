"""Where Duet's bundled, read-only assets are: icons and the offline demo model.

The same code runs from a source checkout, from an installed wheel-less checkout, and frozen by
PyInstaller. Frozen, PyInstaller unpacks data next to the executable and says where in
``sys._MEIPASS`` (``dist/duet/_internal`` for a one-folder build); from source, ``assets/`` sits at
the repository root, two levels above this file. ``DUET_ASSETS_DIR`` overrides both (tests, and a
distribution that ships assets elsewhere, e.g. ``/usr/share/duet``).

Layout (see ``assets/README.md``)::

    assets/icons/duet-<size>.png, duet.ico, duet.icns      (drawn by assets/make_icons.py)
    assets/models/demo/<model>.gguf, mmproj-<model>.gguf, provenance.json

Nothing here writes: bundled assets are read-only (an installed app's folder usually is).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
DEMO_DIR = Path("models") / "demo"


def is_frozen() -> bool:
    """True inside a PyInstaller build (``sys.frozen`` is set by its bootloader)."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def bundle_root() -> Path:
    """The folder that holds ``assets/`` (and, frozen, the app's bundled source and recipes)."""
    if is_frozen():
        return Path(sys._MEIPASS)  # type: ignore[attr-defined]
    return Path(__file__).resolve().parents[2]


def assets_dir() -> Path:
    """The bundled ``assets/`` folder (it may be missing in a stripped checkout: callers check files)."""
    env = os.environ.get("DUET_ASSETS_DIR")
    if env:
        return Path(env)
    return bundle_root() / "assets"


def icon_path(size: int = 256) -> Path | None:
    """The PNG icon closest to ``size`` pixels (at least as large when one exists), or None."""
    icons = assets_dir() / "icons"
    have = [s for s in ICON_SIZES if (icons / f"duet-{s}.png").is_file()]
    if not have:
        return None
    larger = [s for s in have if s >= size]
    best = min(larger) if larger else max(have)
    return icons / f"duet-{best}.png"


@dataclass(frozen=True)
class BundledModel:
    """A GGUF text model + mmproj pair shipped with the app, with where it came from."""

    name: str
    model: Path
    mmproj: Path
    provenance: dict


def bundled_demo() -> BundledModel | None:
    """The demo model shipped in ``assets/models/demo``, or None when this build has none.

    ``provenance.json`` names the two files (so a rename cannot silently pair the wrong ones) and
    records how they were made (recipe, code commit, sha256 of each file).
    """
    folder = assets_dir() / DEMO_DIR
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        return None
    try:
        prov = json.loads(prov_path.read_text(encoding="utf-8"))
        model, mmproj = folder / prov["files"]["model"]["name"], folder / prov["files"]["mmproj"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (model.is_file() and mmproj.is_file()):
        return None
    return BundledModel("demo", model, mmproj, prov)


def verify_bundled(model: BundledModel) -> list[str]:
    """Problems with a bundled pair (sizes or sha256 differ from its provenance); empty when intact."""
    import hashlib

    problems = []
    for role, path in (("model", model.model), ("mmproj", model.mmproj)):
        want = model.provenance["files"][role]
        if path.stat().st_size != want.get("size"):
            problems.append(f"{path.name}: {path.stat().st_size} bytes, provenance says {want.get('size')}")
            continue
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != want.get("sha256"):
            problems.append(f"{path.name}: sha256 differs from provenance.json (damaged install?)")
    return problems
