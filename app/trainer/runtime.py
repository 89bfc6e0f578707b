"""The trainer's private runtime: a virtual environment with PyTorch, made on first use.

The installed app does not ship PyTorch (hundreds of MB to GBs, and the right build depends on the
GPU). The first time the user trains, Duet makes ``<data dir>/trainer-runtime/venv`` with
``python -m venv`` + pip and installs the PyTorch build that matches the machine (CPU, or the CUDA
wheel index that the NVIDIA driver supports), then the trainer's other requirements as pinned in the
app's own ``pyproject.toml``. Training jobs then run as ``<venv python> -m app.trainer.cli …`` on the
app's own source (bundled as plain files in a frozen build, see ``build_app.spec``).

Properties the user relies on:

* **progress**: every phase and each package pip reports is an event (``on_event``); the CLI prints
  them, ``--json`` makes them JSON lines for a progress bar;
* **resumable**: an interrupted install leaves no ``runtime.json``; the next ``install`` reuses a venv
  whose interpreter still runs (pip skips what is already there) and recreates one that does not;
* **verified**: ``runtime.json`` is written last, only after the venv's python imported torch and
  the trainer's modules; ``status`` re-checks the interpreter, so a venv deleted halfway is reported
  as broken, with the command that repairs it;
* **removable**: ``remove`` deletes the folder (the only place it wrote).

Why pip and not uv: pip ships with every Python's ``venv`` (ensurepip), so nothing else has to be
downloaded or bundled; pip's wheel cache also makes a reinstall after ``remove`` quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import ResourceError
from app.core.locks import exclusive
from app.core.paths import user_dir

TORCH_VERSION = "2.13.0"  # the version CI and the demo recipe are tested with (Makefile pins the same)
# PyTorch's wheel indexes for each CUDA runtime it is built for, newest first. A driver runs a CUDA
# runtime up to the version nvidia-smi reports; we pick the newest index the driver can run.
CUDA_INDEXES = (((12, 8), "cu128"), ((12, 6), "cu126"))
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
# What the trainer imports besides torch: the app's own pins (read from pyproject.toml) minus the
# desktop-only packages, which the trainer never imports.
DESKTOP_ONLY = {"pyside6", "pywhispercpp", "pyttsx3", "sounddevice", "mss"}
VERIFY = ("import json, sys, torch, transformers, peft, safetensors, numpy, gguf, cv2, llama_cpp\n"
          "import app.trainer.sft, app.trainer.grpo, app.trainer.export\n"
          "print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(),"
          " 'python': sys.version.split()[0]}))")

Event = dict[str, Any]


class RuntimeSetupError(ResourceError):
    """The runtime cannot be made or used; the message says what to do."""


def default_root() -> Path:
    return user_dir("trainer-runtime")


def source_root() -> Path:
    """Where ``app/`` and ``models/recipes`` are as plain files, for the venv's python to run."""
    from app.core.assets import bundle_root, is_frozen

    return bundle_root() / "src" if is_frozen() else bundle_root()


def cuda_version_from_smi(text: str) -> tuple[int, int] | None:
    """The ``CUDA Version: 12.4`` that ``nvidia-smi`` prints in its header (the driver's maximum)."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def pick_variant(cuda: tuple[int, int] | None) -> str:
    """``cpu`` or the newest ``cuXYZ`` PyTorch index that a driver supporting ``cuda`` can run."""
    if cuda is None:
        return "cpu"
    for need, name in CUDA_INDEXES:
        if cuda >= need:
            return name
    return "cpu"  # a driver too old for any current PyTorch CUDA build: train on the CPU


def detect_variant() -> str:
    """From the NVIDIA driver when there is one (macOS: PyPI's default build, which has Metal/MPS)."""
    override = os.environ.get("DUET_TORCH_VARIANT")
    if override:
        return override
    if sys.platform == "darwin":
        return "default"
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "cpu"
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    return pick_variant(cuda_version_from_smi(out))


def torch_index(variant: str) -> str | None:
    """The pip index for ``variant``; ``DUET_TORCH_INDEX_URL`` overrides it ("" = the configured indexes)."""
    if "DUET_TORCH_INDEX_URL" in os.environ:
        return os.environ["DUET_TORCH_INDEX_URL"] or None
    return None if variant == "default" else TORCH_INDEX.format(variant=variant)


def trainer_requirements(pyproject: Path | None = None) -> list[str]:
    """The trainer's pip requirements from the app's own pyproject.toml (torch excluded: installed first)."""
    import tomllib

    path = pyproject or source_root() / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise RuntimeSetupError(f"{path}: cannot read the app's requirements ({e}); reinstall Duet") from e
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["train"])
    out = []
    for r in reqs:
        name = re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].strip().lower()
        if name in DESKTOP_ONLY or name == "torch":
            continue
        out.append(re.sub(r"\[[^\]]*\]", "", r))  # extras such as llama-cpp-python[server] are not needed
    return out


def find_base_python() -> str:
    """An interpreter that can make a venv: this one from source; frozen, the system's python3."""
    from app.core.assets import is_frozen

    env = os.environ.get("DUET_PYTHON")
    if env:
        return env
    if not is_frozen():
        return sys.executable
    for name in ("python3", "python"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeSetupError("training needs Python 3.10 or newer to set up PyTorch, and none is on the PATH: "
                            "install python3 and python3-venv (Debian/Ubuntu), then retry")


@dataclass
class RuntimeStatus:
    state: str  # absent | incomplete | broken | ready
    root: Path
    detail: str = ""
    info: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def describe(self) -> str:
        if self.state == "ready":
            i = self.info or {}
            return (f"ready: PyTorch {i.get('torch')} ({i.get('variant')}), Python {i.get('python')}, "
                    f"{i.get('size_mb', '?')} MB in {self.root}")
        advice = {"absent": "run `duet train runtime install` (about 1.5 GB for the CPU build)",
                  "incomplete": "an install was interrupted; `duet train runtime install` resumes it",
                  "broken": "`duet train runtime install` repairs it (or `remove` and install again)"}
        return f"{self.state}: {self.detail + '; ' if self.detail else ''}{advice[self.state]}"


class TrainerRuntime:
    """The venv at ``root/venv`` and its record ``root/runtime.json`` (present only once verified)."""

    def __init__(self, root: Path | None = None, *, torch_spec: str | None = f"torch=={TORCH_VERSION}",
                 requirements: list[str] | None = None, verify_code: str = VERIFY) -> None:
        """``torch_spec``, ``requirements`` (default: the app's pins) and ``verify_code`` exist so tests
        can exercise the whole life cycle on a venv with nothing heavy in it."""
        self.root = Path(root) if root else default_root()
        self.torch_spec, self.requirements, self.verify_code = torch_spec, requirements, verify_code
        self.venv = self.root / "venv"
        self.record = self.root / "runtime.json"

    @property
    def python(self) -> Path:
        return self.venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")

    # ---- state -----------------------------------------------------------------------------------
    def _interpreter_runs(self) -> bool:
        if not self.python.exists():
            return False
        try:
            return subprocess.run([str(self.python), "-c", "import sys"], capture_output=True,
                                  timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def status(self) -> RuntimeStatus:
        if not self.root.exists() or not self.venv.exists() and not self.record.exists():
            return RuntimeStatus("absent", self.root)
        if not self.record.exists():
            return RuntimeStatus("incomplete", self.root, "set-up did not finish")
        try:
            info = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return RuntimeStatus("broken", self.root, "runtime.json is unreadable")
        if not self._interpreter_runs():
            return RuntimeStatus("broken", self.root, f"{self.python} is missing or does not start")
        missing = [p for p in info.get("check_paths", []) if not (self.venv / p).exists()]
        if missing:
            return RuntimeStatus("broken", self.root, f"{len(missing)} installed package folder(s) are gone "
                                 f"(e.g. {missing[0]})")
        return RuntimeStatus("ready", self.root, info=info)

    # ---- install ---------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RuntimeSetupError(f"cannot write to {self.root} ({e.strerror or e}): the trainer's PyTorch "
                                    "needs about 1–5 GB there; free space or permissions, or set DUET_DATA_DIR "
                                    "to a writable folder") from e

    def _run(self, argv: list[str], phase: str, emit: Callable[[Event], None], lo: float, hi: float) -> None:
        """Run a set-up command, turning its output lines into progress events between ``lo`` and ``hi``."""
        shown = " ".join([Path(argv[0]).name, *argv[1:]])
        emit({"event": "runtime", "phase": phase, "fraction": lo, "message": shown[:160] + (" …" if len(shown) > 160 else "")})
        # Unbuffered: pip writes to a pipe here, and block buffering would hold its lines back for minutes.
        env = {**os.environ, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                bufsize=1)
        tail: list[str] = []
        seen = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail = (tail + [line])[-25:]
            m = re.match(r"(Collecting|Downloading|Using cached|Processing|Installing collected packages|"
                         r"Successfully installed|Requirement already satisfied)\s*:?\s*(.*)", line.strip())
            if m:
                seen += 1
                frac = lo + (hi - lo) * (1 - 1 / (1 + seen / 8))  # approaches hi; pip does not say how many
                emit({"event": "runtime", "phase": phase, "fraction": round(frac, 3),
                      "message": f"{m.group(1)} {m.group(2)[:100]}".strip()})
        rc = proc.wait()
        if rc != 0:
            text = "\n".join(tail)
            hint = ("no space left on the device: free space and retry" if "No space left" in text else
                    "check the network connection (PyPI and download.pytorch.org), then run the same command "
                    "again: it resumes")
            raise RuntimeSetupError(f"{phase} failed (exit {rc}): {hint}\n{text}")
        emit({"event": "runtime", "phase": phase, "fraction": hi, "message": "done"})

    def verify(self) -> dict[str, Any]:
        """Import torch and the trainer in the venv; returns what it reported."""
        env = {**os.environ, "PYTHONPATH": str(source_root()), "PYTHONNOUSERSITE": "1"}
        try:
            r = subprocess.run([str(self.python), "-c", self.verify_code], capture_output=True, text=True, env=env,
                               timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeSetupError(f"the runtime's python does not run: {e}") from e
        if r.returncode != 0:
            raise RuntimeSetupError("the runtime does not import PyTorch and the trainer:\n"
                                    + "\n".join(r.stderr.strip().splitlines()[-6:]))
        return json.loads(r.stdout.strip().splitlines()[-1])

    def _exclusive(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """The runtime's lock (a sibling file, so ``remove`` can delete the whole folder): two installs from
        the app and a terminal would run pip into one venv at once, and a repair or removal would pull it
        from under the other."""
        return exclusive(self.root.with_name(self.root.name + ".lock"), lambda: RuntimeSetupError(
            f"cannot {doing} the training runtime now: another Duet (the app or a terminal) is installing or "
            "removing it. Wait for that to finish; an install there makes it ready here too."))

    def install(self, on_event: Callable[[Event], None] | None = None, *, variant: str | None = None) -> RuntimeStatus:
        """Make (or repair, or finish) the runtime; idempotent, so rerunning after any failure is the fix.
        One at a time across processes (:meth:`_exclusive`)."""
        self._check_writable()
        with self._exclusive("install"):
            return self._install(on_event or (lambda e: None), variant)

    def _install(self, emit: Callable[[Event], None], variant: str | None) -> RuntimeStatus:
        before = self.status()
        if before.ready:
            emit({"event": "runtime", "phase": "done", "fraction": 1.0, "message": "already installed"})
            return before
        self.record.unlink(missing_ok=True)
        if self.venv.exists() and not self._interpreter_runs():
            emit({"event": "runtime", "phase": "repair", "fraction": 0.0,
                  "message": "the previous environment is damaged; making a new one"})
            shutil.rmtree(self.venv, ignore_errors=True)
        variant = variant or detect_variant()
        t0 = time.monotonic()
        index = torch_index(variant)
        torch_args = ["--index-url", index, "--extra-index-url", "https://pypi.org/simple"] if index else []
        torch_pkgs = [self.torch_spec] if self.torch_spec else []
        reqs = trainer_requirements() if self.requirements is None else self.requirements
        if not self.venv.exists():
            no_pip = [] if torch_pkgs or reqs else ["--without-pip"]  # nothing to install (tests)
            self._run([find_base_python(), "-m", "venv", *no_pip, str(self.venv)], "venv", emit, 0.0, 0.05)
        py = str(self.python)
        if torch_pkgs:
            self._run([py, "-m", "pip", "install", *torch_pkgs, *torch_args], "pytorch", emit, 0.05, 0.6)
        if reqs:
            self._run([py, "-m", "pip", "install", *reqs], "trainer packages", emit, 0.6, 0.95)
        emit({"event": "runtime", "phase": "verify", "fraction": 0.95, "message": "importing torch and the trainer"})
        try:
            info = self.verify()
        except RuntimeSetupError:
            # A package half-written by an earlier interrupted pip: one clean reinstall of everything.
            emit({"event": "runtime", "phase": "repair", "fraction": 0.95, "message": "verification failed; "
                  "reinstalling the packages"})
            if torch_pkgs or reqs:
                self._run([py, "-m", "pip", "install", "--force-reinstall", "--no-deps", *torch_pkgs, *torch_args,
                           *reqs], "reinstall", emit, 0.95, 0.98)
            info = self.verify()
        site = next(self.venv.glob("lib*/python*/site-packages"), None) or self.venv / "Lib" / "site-packages"
        info.update(variant=variant, created=time.time(), seconds=round(time.monotonic() - t0, 1),
                    size_mb=round(_du(self.venv) / 1e6), base_python=find_base_python(),
                    check_paths=[str((site / p).relative_to(self.venv)) for p in ("torch", "transformers")
                                 if (site / p).is_dir()])
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
        os.replace(tmp, self.record)
        emit({"event": "runtime", "phase": "done", "fraction": 1.0, "message": f"PyTorch {info['torch']} ready"})
        return self.status()

    def remove(self) -> bool:
        """Delete the runtime (record first, so a removal interrupted halfway reads as incomplete)."""
        if not self.root.exists():
            return False
        with self._exclusive("remove"):
            self.record.unlink(missing_ok=True)
            shutil.rmtree(self.root)
        return True

    # ---- jobs ------------------------------------------------------------------------------------
    def job_command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run ``duet train ARGS`` inside the runtime."""
        from app.core.assets import assets_dir

        src = str(source_root())
        env = {**os.environ, "PYTHONNOUSERSITE": "1",
               "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
        env.setdefault("DUET_ASSETS_DIR", str(assets_dir()))  # the bundled demo, a base to fine-tune from
        return [str(self.python), "-m", "app.trainer.cli", *args], env


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def torch_importable() -> bool:
    """Whether this process can train itself (a source install with the ``train`` extra)."""
    from app.trainer.own_trainer import own_trainer

    return own_trainer().usable


def cmd_runtime(verb: str | None, *, as_json: bool = False, root: Path | None = None) -> int:
    """``duet train runtime install|status|remove``."""
    rt = TrainerRuntime(root)

    def show(e: Event) -> None:
        if as_json:
            print(json.dumps(e), flush=True)
        else:
            print(f"[{e['fraction'] * 100:3.0f}%] {e['phase']}: {e.get('message', '')}", flush=True)

    try:
        if verb in (None, "status"):
            st = rt.status()
            print(json.dumps({"state": st.state, "root": str(st.root), "detail": st.detail, **(st.info or {})})
                  if as_json else st.describe())
            return 0 if st.ready else 1
        if verb == "install":
            st = rt.install(show)
            print(st.describe())
            return 0 if st.ready else 1
        if verb == "remove":
            print(f"removed {rt.root}" if rt.remove() else "nothing to remove")
            return 0
    except RuntimeSetupError as e:
        print(f"duet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run `duet train runtime install` again to resume", file=sys.stderr)
        return 130
    print(f"duet: error: unknown runtime action {verb!r} (install, status or remove)", file=sys.stderr)
    return 2
