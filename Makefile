# Duet — two commands on a fresh Debian machine:
#   make run    the main job: narrate a real video offline with the demo model
#   make test   the whole test suite (lint, import contracts, pytest)
# Each installs what it needs itself: Debian packages (with sudo when not root) and a project-local
# virtual environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.duet-installed
SYS_STAMP := .cache/.sysdeps-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Qt's xcb/EGL/font/dbus libraries, qemu-user (the packaged app is checked on emulated older CPUs), speech (espeak-ng; alsa-utils for aplay, which pyttsx3 plays replies
# with), audio, the real test videos, Xvfb, and a C++ toolchain
# for llama-cpp-python (an sdist compiled on install).
APT_PACKAGES := python3-venv python3-dev build-essential cmake git openssl \
	libegl1 libgl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 \
	libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libx11-xcb1 \
	espeak-ng alsa-utils libportaudio2 opencv-doc xvfb xauth x11-utils qemu-user

.PHONY: run test sysdeps venv lint clean gpu mutation package smoke

# The bundled demo model (assets/models/demo) was trained on synthetic proactive videos, so the main
# job narrates a held-out one it has never seen.
DEMO_VIDEO := out/demo-video/videos/appear-easy-000.avi

run: $(STAMP)
	$(VENV)/bin/duet eval make-synthetic out/demo-video --families appear,colour --difficulty easy \
		--per-family 1 --seed 7
	$(VENV)/bin/duet run --source $(DEMO_VIDEO) --model demo --ask "Tell me when a new shape appears." \
		--fast --jsonl out/run.jsonl

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider --durations=15

# Hand-written mutants of every package's safety checks and promises against their tests
# (bench/mutants.py, docs/testing.md); about 35 minutes on 2 busy cores, so not part of `make test` or CI.
mutation: $(STAMP)
	QT_QPA_PLATFORM=offscreen nice -n 10 $(PY) bench/mutation.py --json bench/results/mutation.json

sysdeps: $(SYS_STAMP)
$(SYS_STAMP):
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@mkdir -p $(dir $@) && touch $@

venv: $(STAMP)
# The CPU build of torch is pinned and installed first: a bare `torch` requirement would pull the
# multi-GB CUDA build. llama-cpp-python is built portable by installer/build_llama.py: every CPU
# library from x86-64 baseline to AVX-512 (ggml picks the best at start), never AMX, never
# -march=native; ≈ 35 min on 2 cores the first time, then a cached wheel (~/.cache/duet/wheels).
$(STAMP): pyproject.toml installer/build_llama.py $(SYS_STAMP)
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q torch==2.13.0
	$(PY) installer/build_llama.py
	$(PY) -m pip install -q -e '.[train,test]'
	touch $@

# GPU build of llama.cpp: `make gpu` (or GPU=cuda|vulkan|metal make gpu) recompiles llama-cpp-python
# in .venv for the GPU (all the GPUs of its kind users have, plus the same portable CPU libraries);
# `duet models recommend` then lists the GPU as llama.cpp sees it.
GPU ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo cuda; \
	elif [ "$$(uname)" = Darwin ]; then echo metal; \
	elif command -v vulkaninfo >/dev/null 2>&1 && vulkaninfo --summary 2>/dev/null | grep -q PHYSICAL_DEVICE_TYPE_DISCRETE_GPU; then echo vulkan; \
	else echo none; fi)

gpu: $(STAMP)
	@case "$(GPU)" in cuda|vulkan|metal) ;; \
	*) echo "make gpu: no NVIDIA (nvidia-smi), Vulkan or Apple GPU found. Name one: GPU=cuda|vulkan|metal make gpu"; exit 1;; \
	esac
	$(PY) installer/build_llama.py --flavour $(GPU)
	$(VENV)/bin/duet models recommend

# The installable app: PyInstaller's one-folder build in dist/duet/ (no PyTorch: the trainer installs
# its own on first use), then dist/duet_<version>_<arch>.deb. `make smoke` tests the frozen app and
# the .deb as a new user meets them (installer/smoke_frozen.py); CI runs `make package smoke`.
PKG_STAMP := $(VENV)/.duet-package-installed
$(PKG_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[package]'
	touch $@

package: $(PKG_STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --workpath build/pyinstaller --distpath dist build_app.spec
	installer/linux/build_deb.sh

smoke: $(STAMP)
	$(PY) installer/smoke_frozen.py --deb $$(ls -t dist/duet_*.deb | head -1)

clean:
	rm -rf $(VENV) .cache out build dist

# vLLM for `duet serve --engine vllm` (many viewers; docs/scaling.md), in an environment of its own
# (~/.cache/duet/vllm-env; VLLM_ENV=… to choose, GPU=cuda for the GPU build): ≈ 3 min and 3.5 GB on 2 cores.
# Not part of `make test`: tests/engine/test_vllm_real.py runs when it exists (and DUET_VLLM_MODEL names a checkpoint).
.PHONY: vllm
vllm:
	VLLM_ENV=$${VLLM_ENV:-$$HOME/.cache/duet/vllm-env} bash installer/vllm_env.sh
