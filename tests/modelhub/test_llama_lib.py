"""The installed llama.cpp is the portable build, its backends load, and it holds no kernel that can crash.

These look at the real libraries in the venv (what `make venv` and the packages install).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

from app.modelhub import llama_lib

X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_the_backends_load_and_the_cpu_library_is_one_this_cpu_runs() -> None:
    info = llama_lib.load_backends()
    assert llama_lib.load_backends() is info  # once per process
    assert any(kind == 0 for _, _, kind in info.devices), "llama.cpp has a CPU device"
    if X86 and sys.platform.startswith("linux"):
        assert info.dynamic, "the portable build: one loadable CPU library per instruction-set level"
        assert {"x64", "sse42", "haswell", "skylakex"} <= set(info.cpu_variants_available)
        assert info.cpu_variant in info.cpu_variants_available
        # The library chosen needs nothing this CPU lacks (AVX2 and AVX-512 by their /proc/cpuinfo names).
        flags = llama_lib.host_cpu_flags()
        needs = {"haswell": {"avx2", "fma"}, "skylakex": {"avx512f"}, "cascadelake": {"avx512_vnni"},
                 "icelake": {"avx512_vbmi", "avx512_vnni"}, "zen4": {"avx512_bf16"}, "alderlake": {"avx_vnni"}}
        assert needs.get(info.cpu_variant, set()) <= flags
    # llama.cpp itself sees the same backend (the registry libllama uses, not a second copy of libggml).
    features = llama_lib.cpu_features()
    assert features, "llama_print_system_info names the CPU backend's features"


@pytest.mark.skipif(not (X86 and sys.platform.startswith("linux")), reason="x86-64 Linux build")
def test_no_cpu_library_holds_amx_instructions() -> None:
    """AMX kernels die with SIGILL on Linux (the tile permission is asked for on one thread only): the portable
    build must carry none. A -march=native build with GGML_AMX_*=OFF alone still held 96 of them."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.fail("objdump is missing: install binutils (build-essential, which `make` installs)")
    libs = sorted(p for p in llama_lib.lib_dir().iterdir() if p.name.startswith("libggml-cpu"))
    assert libs
    for lib in libs:
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                              check=True).stdout
        tiles = sum(1 for line in text.splitlines() if "tileloadd" in line or "tdpb" in line)
        assert tiles == 0, f"{lib.name} holds {tiles} AMX tile instructions"


@pytest.mark.skipif(not (X86 and sys.platform.startswith("linux")), reason="x86-64 Linux build")
def test_a_forced_cpu_library_that_does_not_exist_is_refused_in_words() -> None:
    code = ("import os; os.environ['DUET_CPU_VARIANT'] = 'nonesuch'\n"
            "from app.modelhub.llama_lib import load_backends\n"
            "try:\n    load_backends()\nexcept OSError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "'nonesuch'" in out and "not in this build" in out and "x64" in out
