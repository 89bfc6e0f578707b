"""The one door to the llama.cpp libraries: process-wide native settings, then the ggml backends.

Duet's llama-cpp-python is built the way llama.cpp's own releases are (``installer/build_llama.py``):
ggml's backends are loadable libraries (GGML_BACKEND_DL) with one CPU library per instruction-set
level (``libggml-cpu-haswell.so``, ``…-skylakex.so``, …). Nothing is registered until someone loads
them, and llama-cpp-python never does (its issue #2069: "no backends are loaded"), so every path that
touches llama.cpp calls :func:`load_backends` first. ggml scores each CPU library against the CPU's
features and loads the best one it can run, so one build runs on any x86-64 and is fast on each.

``DUET_CPU_VARIANT`` (or :class:`~app.core.config.BackendSettings` ``cpu_variant``, which the engine's
process turns into it) forces one CPU library, e.g. ``x64`` (any x86-64) after a crash in a faster one.

A build made the ordinary way (GGML_NATIVE, backends linked in) has them registered already; then
loading is a no-op and :func:`info` says so.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

_lock = threading.Lock()
_loaded: BackendsInfo | None = None
_ggml: ctypes.CDLL | None = None  # libllama's own libggml, typed once (see _libggml)


def configure_process() -> None:
    """Process-wide native settings, called once by each entry point before the backends load.

    llama.cpp's CPU backend runs its threads under OpenMP, whose default wait policy spins between
    operations; on a desktop whose cores are shared that burns the time slice the partner thread needs
    (2 threads on 2 loaded cores: 8.6 s a step spinning, 1.0 s waiting passively; docs/benchmarks.md §3).
    libgomp reads the policy when it is loaded, which with loadable backends is when the CPU library
    loads (:func:`load_backends`), not at ``import llama_cpp``. A user's own OMP_WAIT_POLICY wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class BackendsInfo:
    """What :func:`load_backends` found: the libraries, the CPU library chosen, and the devices."""

    lib_dir: Path
    dynamic: bool  # loadable backends (a portable build) rather than linked in
    cpu_variant: str  # e.g. "haswell"; "built-in" for a build with the CPU backend linked in
    cpu_variants_available: list[str] = field(default_factory=list)
    devices: list[tuple[str, str, int]] = field(default_factory=list)  # (name, description, type)
    forced: bool = False  # DUET_CPU_VARIANT chose the CPU library


def lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def _libggml(directory: Path) -> ctypes.CDLL:
    """The libggml that libllama itself uses. The wheel holds copies, not links (``libggml.so``,
    ``libggml.so.0``, …), and each copy loaded is a registry of its own: opening another file than the one
    libllama's soname resolved to would load the backends where llama.cpp never looks."""
    mapped = _mapped(directory, "libggml.")
    candidates = [mapped] if mapped else []
    candidates += [directory / n for n in ("libggml.so.0", "libggml.so", "libggml.0.dylib", "libggml.dylib",
                                           "ggml.dll")]
    for path in candidates:
        if path.exists():
            lib = ctypes.CDLL(str(path))
            break
    else:
        raise OSError(f"{directory}: llama-cpp-python's ggml library is missing (reinstall it: make venv)")
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, fn).restype = ctypes.c_char_p
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]
    if hasattr(lib, "ggml_backend_load_all_from_path"):
        lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load_all_from_path.restype = None
        lib.ggml_backend_load.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load.restype = ctypes.c_void_p
    return lib


def _mapped(directory: Path, prefix: str) -> Path | None:
    """A library from ``directory`` whose name starts with ``prefix`` that this process has mapped (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.startswith("/") and Path(path).parent == directory.resolve() and Path(path).name.startswith(prefix):
            return Path(path)
    return None


def _variant_files(directory: Path) -> dict[str, Path]:
    out = {}
    for p in directory.iterdir():
        name = p.name
        for prefix in ("libggml-cpu-", "ggml-cpu-"):
            if name.startswith(prefix) and p.suffix in (".so", ".dylib", ".dll"):
                out[name[len(prefix):].rsplit(".", 1)[0]] = p
    return out


def _loaded_cpu_library() -> str | None:
    """The CPU variant this process mapped (Linux: /proc/self/maps), else None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            return name[len("libggml-cpu-"):-3]
    return None


def load_backends() -> BackendsInfo:
    """Register llama.cpp's backends once per process (idempotent, thread-safe) and say which loaded.

    Raises OSError with what to do when the libraries are missing, or when a portable build finds no CPU
    library this CPU can run (which ggml would otherwise report later as "no backends are loaded").
    """
    global _loaded, _ggml
    with _lock:
        if _loaded is not None:
            return _loaded
        configure_process()
        import llama_cpp  # noqa: F401 - loads libllama and libggml from the package's lib folder

        directory = lib_dir()
        lib = _ggml = _libggml(directory)
        variants = _variant_files(directory)
        dynamic = bool(variants) or int(lib.ggml_backend_reg_count()) == 0
        forced_name = os.environ.get("DUET_CPU_VARIANT", "").strip()
        forced = bool(forced_name) and forced_name != "auto"
        if dynamic:
            if forced:
                if forced_name not in variants:
                    raise OSError(f"CPU library {forced_name!r} (--cpu-variant, DUET_CPU_VARIANT): not in this build; "
                                  f"choose one of {', '.join(sorted(variants)) or '(none)'} or auto")
                if not lib.ggml_backend_load(str(variants[forced_name]).encode()):
                    raise OSError(f"the CPU library {variants[forced_name].name} does not run on this CPU; "
                                  "choose a lower one or auto")
                for p in sorted(directory.iterdir()):  # the GPU backends, as load_all would
                    stem = p.name.split(".")[0].removeprefix("lib")
                    if stem.startswith("ggml-") and stem not in ("ggml-base",) and not stem.startswith("ggml-cpu"):
                        lib.ggml_backend_load(str(p).encode())
            else:
                lib.ggml_backend_load_all_from_path(str(directory).encode())
        devices = []
        for i in range(int(lib.ggml_backend_dev_count())):
            dev = lib.ggml_backend_dev_get(i)
            devices.append(((lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                            (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                            int(lib.ggml_backend_dev_type(dev))))
        if not any(t == 0 for _, _, t in devices):
            raise OSError(f"llama.cpp found no CPU library it can run on this CPU in {directory} "
                          f"(present: {', '.join(sorted(variants)) or 'none'}); reinstall Duet's build "
                          "(make venv, or the installer)")
        chosen = (forced_name if forced else _loaded_cpu_library() or "?") if dynamic else "built-in"
        _loaded = BackendsInfo(directory, dynamic, chosen, sorted(variants), devices, forced)
        return _loaded


def ggml() -> ctypes.CDLL:
    """libllama's own libggml with its device functions typed, the backends loaded."""
    load_backends()
    assert _ggml is not None
    return _ggml


def cpu_features() -> dict[str, bool]:
    """The instruction-set features of the CPU library in use, as llama.cpp reports them (``AVX2``…)."""
    load_backends()
    import llama_cpp

    text = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    out: dict[str, bool] = {}
    for part in text.replace("|", "\n").splitlines():
        if "=" in part:
            k, _, v = part.rpartition("=")
            k = k.strip().split(":")[-1].strip()
            if k and v.strip() in ("0", "1"):
                out[k] = v.strip() == "1"
    return out


def host_cpu_flags() -> set[str]:
    """The CPU's own feature flags (Linux /proc/cpuinfo; empty elsewhere), independent of llama.cpp."""
    if not sys.platform.startswith("linux"):
        return set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
