#!/usr/bin/env python3
"""Build (or reuse) a portable llama-cpp-python wheel and install it.

Why this exists: pip's plain `pip install llama-cpp-python` compiles llama.cpp with GGML_NATIVE, so the
venv, the frozen app and the .deb carry the instruction set of whichever machine built them (SIGILL on
an older CPU), and on a CPU with AMX ggml routes quantized matmuls to AMX kernels that die with SIGILL
in `tileloadd` (the tile-data permission is requested on the main thread only; llama.cpp PR #26954).

What it builds instead, as llama.cpp's own releases do: ggml's loadable backends
(GGML_BACKEND_DL) with one CPU library per instruction-set level (GGML_CPU_ALL_VARIANTS), so one build
runs on any x86-64 from the baseline up to AVX-512 and picks the best library at start
(`app/modelhub/llama_lib.load_backends`). Two source changes are applied to the sdist, each checked:
  * the Sapphire Rapids variant (the only one with AMX) is replaced by the same features without AMX,
    and a few rarely-distinct variants are dropped to keep the build within CI's time on 2 cores;
  * llama-cpp-python's CMakeLists installs the variant libraries (it installs only `ggml-cpu`).
GPU flavours add CUDA (Turing to Blackwell, never just the building machine's GPU) or Vulkan on top
of the same CPU variants.

The wheel is cached outside the checkout (`$DUET_WHEEL_CACHE`, default ~/.cache/duet/wheels), keyed by
version, flavour and this file's recipe, so a fresh clone (CI) installs it in seconds.

Usage: build_llama.py [--flavour cpu|cuda|vulkan|metal] [--python PY] [--no-install] [--native]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"
PACKAGE = "llama-cpp-python"

# x86-64 CPU variants built (ggml names; features listed in ggml/src/CMakeLists.txt). The loader scores
# each by the CPU's features and loads the best one. Dropped from upstream's list: ivybridge and
# piledriver (sandybridge serves them), cannonlake (skylakex), cooperlake (cascadelake), and
# sapphirerapids, whose AMX kernels crash (see the module docstring): zen4 has its features minus AMX.
X86_VARIANTS = ("x64", "sse42", "sandybridge", "haswell", "skylakex", "cascadelake", "icelake", "zen4",
                "alderlake")
ALL_UPSTREAM_VARIANTS = ("x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell", "skylakex",
                         "cannonlake", "cascadelake", "icelake", "cooperlake", "zen4", "alderlake",
                         "sapphirerapids")

# CUDA architectures: Turing (75) to Blackwell (100, 120) as real code, plus PTX for the newest so a
# future GPU JIT-compiles. Older CUDA toolkits do not know 100/120: trimmed by the nvcc version.
CUDA_ARCHS_NEW = "75-real;80-real;86-real;89-real;90-real;100-real;120-real;120-virtual"
CUDA_ARCHS_OLD = "75-real;80-real;86-real;89-real;90-real;90-virtual"

# Bump when patch_source or the CMake arguments change in a way the constants above do not show.
RECIPE_REVISION = 1
NATIVE_REVISION = 2  # the --native recipe's own (AMX off in the compiler too)


def cache_dir() -> Path:
    root = os.environ.get("DUET_WHEEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "duet", "wheels")
    return Path(root)


def recipe_key(flavour: str, native: bool) -> str:
    """A short hash of what decides the wheel's contents (editing a comment here must not cost a rebuild)."""
    revision = f"{RECIPE_REVISION}n{NATIVE_REVISION}" if native else str(RECIPE_REVISION)
    h = hashlib.sha256(f"{VERSION}|{X86_VARIANTS}|{revision}|{flavour}|{native}|"
                       f"{platform.machine()}|{sys.platform}|{sys.version_info[:2]}".encode())
    return h.hexdigest()[:12]


def cmake_args(flavour: str, native: bool) -> list[str]:
    if native:  # a developer's own fastest build; never packaged (build_app.spec refuses it)
        # GGML_AMX_*=OFF alone is not enough: -march=native turns the compiler's AMX on and ggml follows the
        # compiler's macros (96 tile instructions in libggml-cpu.so, SIGILL at the first step). So AMX is
        # switched off in the compiler too.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        args = ["-DGGML_NATIVE=ON", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
                f"'-DCMAKE_C_FLAGS={no_amx}'", f"'-DCMAKE_CXX_FLAGS={no_amx}'"]
    elif sys.platform == "darwin":  # Apple silicon: one CPU baseline (M1 and later) and Metal, as upstream ships it
        args = ["-DGGML_NATIVE=OFF"]
    else:
        args = ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON"]
        if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
            args.append("-DGGML_CPU_ALL_VARIANTS=ON")
        # The variant libraries resolve ggml-base symbols at load time (as ramalama's build does).
        if sys.platform.startswith("linux"):
            args.append("-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--allow-shlib-undefined")
    if flavour == "cuda":
        archs = CUDA_ARCHS_NEW
        try:
            out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
            m = re.search(r"release (\d+)\.(\d+)", out)
            if m and (int(m.group(1)), int(m.group(2))) < (12, 8):
                archs = CUDA_ARCHS_OLD
        except (OSError, subprocess.CalledProcessError):
            sys.exit("build_llama: the CUDA compiler (nvcc) is missing: install the CUDA toolkit "
                     "(Debian/Ubuntu: sudo apt-get install nvidia-cuda-toolkit), then run again")
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
    elif flavour == "vulkan":
        if shutil.which("glslc") is None:
            sys.exit("build_llama: the Vulkan shader compiler is missing: sudo apt-get install libvulkan-dev "
                     "glslc, then run again")
        args.append("-DGGML_VULKAN=ON")
    elif flavour == "metal":
        args.append("-DGGML_METAL=ON")
    return args


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"build_llama: {path.name} of {PACKAGE} {VERSION} changed; update the recipe "
                         f"(expected exactly one {old[:60]!r})")
    path.write_text(text.replace(old, new))


def patch_source(src: Path) -> None:
    """Apply Duet's two checked changes to the unpacked sdist (see the module docstring)."""
    ggml = src / "vendor/llama.cpp/ggml/src/CMakeLists.txt"
    text = ggml.read_text()
    for name in ALL_UPSTREAM_VARIANTS:
        if name in X86_VARIANTS:
            continue
        pattern = re.compile(rf"^(\s*)ggml_add_cpu_backend_variant\({re.escape(name)}\s[^\n]*\)\n", re.M)
        text, n = pattern.subn(r"\1# Duet: variant dropped (installer/build_llama.py)\n", text)
        if n != 1:
            raise SystemExit(f"build_llama: ggml variant {name!r} not found once in {ggml}; update the recipe")
    if "AMX_TILE" in re.sub(r"#[^\n]*", "", text.split("if (GGML_CPU_ALL_VARIANTS)", 1)[1].split("elseif", 1)[0]):
        raise SystemExit("build_llama: an AMX variant is still listed; update the recipe")
    ggml.write_text(text)

    variants = " ".join(f"ggml-cpu-{v}" for v in ALL_UPSTREAM_VARIANTS)
    _replace_once(src / "CMakeLists.txt", "    llama_cpp_python_install_target(ggml-cpu)\n",
                  "    llama_cpp_python_install_target(ggml-cpu)\n"
                  f"    foreach(variant {variants})\n"
                  "        llama_cpp_python_install_target(${variant})\n"
                  "    endforeach()\n")


def build_wheel(python: str, flavour: str, native: bool, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="duet-llama-") as tmp:
        tmpd = Path(tmp)
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(tmpd), f"{PACKAGE}=={VERSION}"], check=True)
        sdist = next(tmpd.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmpd, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmpd)
        src = next(p for p in tmpd.iterdir() if p.is_dir())
        if not native:
            patch_source(src)
        env = dict(os.environ, CMAKE_ARGS=" ".join(cmake_args(flavour, native)), FORCE_CMAKE="1",
                   CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        print(f"build_llama: compiling {PACKAGE} {VERSION} ({flavour}{', native' if native else ''}): "
              f"CMAKE_ARGS={env['CMAKE_ARGS']}", flush=True)
        wheels = tmpd / "wheels"
        subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
                       check=True, env=env)
        built = next(wheels.glob("*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        part = out / (built.name + ".part")
        shutil.copyfile(built, part)
        # The cached name carries the recipe key as a wheel build tag, so pip still accepts it.
        name_parts = built.name.split("-")
        final = out / "-".join([name_parts[0], name_parts[1], f"1{recipe_key(flavour, native)}"]
                               + name_parts[2:])
        os.replace(part, final)
        return final


def find_cached(flavour: str, native: bool) -> Path | None:
    key = recipe_key(flavour, native)
    hits = sorted(cache_dir().glob(f"llama_cpp_python-{VERSION}-1{key}-*.whl"))
    return hits[-1] if hits else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavour", choices=("cpu", "cuda", "vulkan", "metal"), default="cpu")
    ap.add_argument("--python", default=sys.executable, help="the interpreter whose environment gets it")
    ap.add_argument("--no-install", action="store_true", help="build (or find) the wheel only")
    ap.add_argument("--native", action="store_true",
                    help="this machine's instruction set only (fastest here, never AMX; not portable)")
    ap.add_argument("--print-path", action="store_true", help="print the cached wheel's path, build nothing")
    args = ap.parse_args(argv)

    wheel = find_cached(args.flavour, args.native)
    if args.print_path:
        print(wheel or "")
        return 0 if wheel else 1
    if wheel is None:
        wheel = build_wheel(args.python, args.flavour, args.native, cache_dir())
        print(f"build_llama: cached {wheel}", flush=True)
    else:
        print(f"build_llama: using cached {wheel.name}", flush=True)
    if not args.no_install:
        subprocess.run([args.python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)],
                       check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
