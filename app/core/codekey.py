"""A hash of the code that makes a cached artifact, so a cache entry made by older code is never reused.

The tiny model and the trained demo are cached between runs. Keying them on their settings alone let
a machine that had run the suite once keep testing files made by older code (a converter that swaps
two tensors still passed the parity tests with a warm cache). :func:`code_key` hashes the source of
a module and of every ``app.*`` module it imports, directly or not, at any depth and from inside
functions too (the project imports heavy dependencies lazily).

Why not :mod:`modulefinder`: it scans every third-party module it meets (torch, transformers), which
takes minutes; only the project's own files matter here, and ``ast`` finds their imports in
milliseconds.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "app"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the ``app`` package


def _module_file(name: str, root: Path) -> Path | None:
    rel = Path(*name.split("."))
    for cand in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, module: str) -> set[str]:
    """``app.*`` modules named by any import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # ``from app.x import y`` may name a module
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def source_closure(roots: Iterable[str], source_root: Path = SOURCE_ROOT) -> dict[str, Path]:
    """Every project module reachable from ``roots`` by imports, with its file (packages' __init__ included)."""
    todo = list(roots)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, source_root)
        if path is None:
            continue  # a name imported from a module (a function or class), not a module itself
        seen[name] = path
        parents = name.split(".")
        todo += [".".join(parents[:i]) for i in range(1, len(parents))]  # importing a.b.c runs a and a.b
        todo += sorted(_imports(path, name))
    return dict(sorted(seen.items()))


def code_key(*roots: str, source_root: Path = SOURCE_ROOT) -> str:
    """12 hex digits naming the source of ``roots`` and all they import from the project.

    Where the sources are not readable (a frozen build keeps only bytecode), the key falls back to
    the application's version: an installed release's code does not change under it.
    """
    files = source_closure(roots, source_root)
    if not files:
        from app import __version__

        return "v" + hashlib.sha256(__version__.encode()).hexdigest()[:11]
    h = hashlib.sha256()
    for name, path in files.items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]
