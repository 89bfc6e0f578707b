#!/usr/bin/env bash
# The 3B-shape step benchmark on an NVIDIA GPU: builds llama-cpp-python with CUDA, runs bench/model_3b.py with
# every layer and the vision projector offloaded, and prints per-step vision / prefill / decode, tokens/s and
# peak VRAM. Run from the repository root on a machine with an NVIDIA driver, the CUDA toolkit (nvcc) and the
# project's virtualenv:    bash bench/gpu.sh [--steps 3] [--quick]
# The CUDA build goes to .cache/gpu-llama (the CPU wheel in the venv is left alone); results land in
# bench/results/model_3b_gpu.json. Not run on the 2-core development machine (no GPU): see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this script needs an NVIDIA GPU and driver" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit (the wheel is compiled here)" >&2; exit 2; }
VER=$("$PY" -c "import llama_cpp; print(llama_cpp.__version__)")
TARGET=.cache/gpu-llama
if ! PYTHONPATH=$TARGET "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; then
  echo "building llama-cpp-python $VER with CUDA into $TARGET (10-20 min)…"
  CMAKE_ARGS="-DGGML_CUDA=on" FORCE_CMAKE=1 "$PY" -m pip install --no-cache-dir --no-deps --target "$TARGET" \
    "llama-cpp-python==$VER"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
VRAM_LOG=$(mktemp)
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$VRAM_LOG" &
SMI=$!
trap 'kill $SMI 2>/dev/null || true; rm -f "$VRAM_LOG"' EXIT
BASE=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
PYTHONPATH="$TARGET:$PWD" "$PY" bench/model_3b.py --gpu "$@"
kill $SMI 2>/dev/null || true
PEAK=$(sort -n "$VRAM_LOG" | tail -1)
echo "VRAM: peak ${PEAK} MiB used on the GPU during the run (${BASE} MiB before it started)"
