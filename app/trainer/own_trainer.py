"""What this interpreter has of the trainer's libraries: whether training needs the private runtime at all.

A source install with the ``train`` extra (``pip install -e '.[train]'``) already has PyTorch, transformers
and peft: training jobs run on this interpreter (``duet train`` checks :func:`own_trainer` first), and the
runtime dialog must not offer a 1.5 GB second copy. The installed app has none of them and uses
:mod:`app.trainer.runtime`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

# What a training job imports from the ``train`` extra; with all three present (at the app's minimum versions)
# this interpreter trains by itself and the private runtime is not needed.
TRAINER_IMPORTS = ("torch", "transformers", "peft")


@dataclass(frozen=True)
class OwnTrainer:
    """What this interpreter has of the trainer's libraries: a source install with the ``train`` extra has
    them all, and then training runs here and the 1.5 GB private runtime would be a second copy."""

    python: str
    versions: dict[str, str]  # package -> installed version, for those found
    missing: tuple[str, ...]  # absent, or older than the app's minimum ("peft (0.9 < 0.15)")

    @property
    def usable(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        found = ", ".join(f"{'PyTorch' if k == 'torch' else k} {v}" for k, v in self.versions.items())
        if self.usable:
            return (f"this install already has {found} (in {self.python}): training uses them, "
                    "so there is nothing to install")
        if "torch" in self.versions:
            return (f"this install has {found} but not {', '.join(self.missing)}: `pip install -e '.[train]'` "
                    "in its environment completes it, or install the private runtime")
        return ""


def _release(version: str) -> tuple[int, ...]:
    """``2.13.0+cpu`` -> (2, 13, 0): enough to compare with a ``>=`` pin."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def _train_minimums() -> dict[str, str]:
    """The ``name>=X`` pins of the ``train`` extra (none when pyproject.toml is not there: a frozen app)."""
    import tomllib

    from app.trainer.runtime import source_root

    try:
        extra = tomllib.loads((source_root() / "pyproject.toml").read_text(encoding="utf-8"))[
            "project"]["optional-dependencies"]["train"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return {}
    return {m.group(1).lower(): m.group(2) for r in extra if (m := re.match(r"([\w.-]+)\s*>=\s*([\w.]+)", r))}


def own_trainer(needs: tuple[str, ...] = TRAINER_IMPORTS) -> OwnTrainer:
    """Which of ``needs`` this interpreter can import, at the app's minimum version. Found without importing
    them (PyTorch alone takes seconds to import), from the import system and the installed distributions."""
    import importlib.metadata
    import importlib.util

    from app.core.assets import is_frozen

    minimums = _train_minimums()
    versions: dict[str, str] = {}
    missing: list[str] = []
    for name in needs:
        if is_frozen() or importlib.util.find_spec(name) is None:
            missing.append(name)
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "?"  # importable (e.g. on PYTHONPATH) but not installed as a distribution
            continue
        low = minimums.get(name)
        if low and _release(versions[name]) < _release(low):
            missing.append(f"{name} ({versions[name]} < {low})")
    return OwnTrainer(sys.executable, versions, tuple(missing))
