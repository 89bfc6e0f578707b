#!/usr/bin/env bash
# The GPU benchmarks, on a machine with an NVIDIA GPU, in one go:
#   1. builds llama-cpp-python with CUDA into .cache/gpu-llama (the CPU wheel in the venv is left alone), while
#      the random Qwen2.5-VL-3B-shaped model is converted to F16 GGUF on the CPU at the same time;
#   2. bench/model_3b.py --gpu: per-step vision / prefill / decode, tokens/s (Q4_K_M text + F16 mmproj, every
#      layer and the projector offloaded), with peak VRAM sampled by nvidia-smi;
#   3. bench/soak.py stream --gpu: the 2-hour accelerated stream on the bundled demo model (flat memory);
#   4. bench/hf_vs_engine.py --shape 3b --gpu: this engine against transformers + past_key_values (bfloat16) on
#      the same 3B weights, 100 turns.
# Results land in bench/results/{model_3b_gpu,soak-stream-gpu,hf_vs_engine_3b_gpu}.json and the log.
#
#   bash bench/gpu.sh [model_3b|soak|hf ...]        (default: all three, in that order)
#
# Environment: PY (default .venv/bin/python, else python3); LLAMA_CPP_SRC: an unpacked llama-cpp-python source
# tree of the pinned version to build offline (no build isolation: scikit-build-core, cmake and ninja must be
# installed); without it pip downloads the pinned sdist. CUDA_ARCH (default: native, the GPU in this machine).
# CUDA_FA=OFF leaves llama.cpp's FlashAttention kernels out (a build several minutes shorter; attention then runs
# without them). The CMake build folder .cache/gpu-llama-build is kept, so an interrupted build resumes.
# Needs the NVIDIA driver and the CUDA toolkit (nvcc). Run once on an H100: see docs/benchmarks.md §9, which also
# records a crash of that CUDA build when numpy is imported before llama_cpp (outside Duet's code).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(model_3b soak hf)
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this script needs an NVIDIA GPU and driver" >&2; exit 2; }
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit (the wheel is compiled here)" >&2; exit 2; }
VER=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
TARGET=$PWD/.cache/gpu-llama
export PYTHONPATH="$TARGET:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p .cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "nvcc: $(nvcc --version | tail -1); cores: $(nproc)"

t0=$(date +%s)
BUILD_PID=
if ! "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; then
  SRC=${LLAMA_CPP_SRC:-"llama-cpp-python==$VER"}
  ISO=(); [ -n "${LLAMA_CPP_SRC:-}" ] && ISO=(--no-build-isolation)
  echo "building llama-cpp-python $VER with CUDA (arch ${CUDA_ARCH:-native}, FlashAttention ${CUDA_FA:-ON}) into $TARGET, log .cache/gpu-build.log"
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-native} -DGGML_CUDA_FA=${CUDA_FA:-ON}" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) SKBUILD_BUILD_DIR=$PWD/.cache/gpu-llama-build \
    "$PY" -m pip install --no-cache-dir --no-deps "${ISO[@]}" --target "$TARGET" --upgrade "$SRC" \
    > .cache/gpu-build.log 2>&1 &
  BUILD_PID=$!
fi
# The conversion needs no llama.cpp: it runs while the wheel compiles.
if [[ " ${STEPS[*]} " == *" model_3b "* || " ${STEPS[*]} " == *" hf "* ]]; then
  nice "$PY" bench/model_3b.py --prepare --keep
fi
if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID" || { tail -40 .cache/gpu-build.log; echo "the CUDA build failed (log above)" >&2; exit 1; }
  echo "CUDA build done in $(( $(date +%s) - t0 )) s (wall, conversion alongside)"
fi
"$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
  || { echo "the built llama-cpp-python has no GPU offload" >&2; exit 1; }

VRAM_LOG=$(mktemp)
SMI=
trap '[ -n "$SMI" ] && kill $SMI 2>/dev/null; rm -f "$VRAM_LOG"' EXIT
vram() {  # peak VRAM of the command it runs, sampled every 250 ms
  : > "$VRAM_LOG"
  local base; base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$VRAM_LOG" & SMI=$!
  "$@"
  kill $SMI 2>/dev/null || true; SMI=
  echo "VRAM: peak $(sort -n "$VRAM_LOG" | tail -1) MiB used on the GPU during '$*' (${base} MiB before)"
}
for step in "${STEPS[@]}"; do
  case $step in
  model_3b) vram "$PY" bench/model_3b.py --gpu --keep ;;
  soak) vram "$PY" bench/soak.py stream --gpu --hours 2 --window-min 10 ;;
  hf) vram "$PY" bench/hf_vs_engine.py --shape 3b --gpu --turns 100 --keep ;;
  *) echo "unknown step $step (model_3b, soak, hf)" >&2; exit 2 ;;
  esac
done
