"""The checks behind ``duet doctor``, the About dialog and the first-run wizard.

Each check returns one :class:`Check`; :func:`run_checks` runs them all and never raises: a check that
fails with an exception becomes a failed ``Check`` that carries the exception's message, because a
diagnostic tool that dies with a traceback on the broken computer it was run to diagnose is no use.

The llama.cpp parts (the CPU library ggml chose, the GPUs it sees, one step of the demo model) come
from a child process (:mod:`app.doctor.probe`), so a library that kills its process (SIGILL on a CPU
that lacks an instruction, SIGSEGV in a driver) is reported by name here instead of killing the doctor.
The child reports as it goes (one JSON object a line), so the stage it died in says which check failed.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.engine.engine_process import app_command, exit_signal

log = logging.getLogger("duet.doctor")

PROBE_TIMEOUT = 120.0  # seconds for the child to load llama.cpp and the demo model and run one step
GPU_DEVICE_TYPES = (1, 3)  # ggml_backend_dev_type: GPU, IGPU (CPU=0, ACCEL=2)
REINSTALL = "reinstall llama.cpp: `make venv` from a source checkout, or the official Duet package"

MARKS: dict[bool | None, str] = {True: "✓", False: "✗", None: "–"}


@dataclass(frozen=True)
class Check:
    """One finding. ``ok`` True: fine; False: a problem, ``fix`` says what to do; None: not applicable
    here or a warning (no camera on a desktop without one is not an error; neither is an unused GPU)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def format_check(c: Check) -> list[str]:
    """A check as the command line and the dialogs print it: ``✓ name: detail`` then ``  fix: …``."""
    lines = [f"{MARKS[c.ok]} {c.name}: {c.detail}"]
    if c.fix:
        lines.append(f"  fix: {c.fix}")
    return lines


def failed(checks: list[Check]) -> bool:
    """Whether any check failed (``duet doctor`` exits 1 then); warnings do not count."""
    return any(c.ok is False for c in checks)


# ---- the child process ---------------------------------------------------------------------------
# What each way of dying most likely means here, and what to do about it.
_SIGNAL_CAUSES: dict[str, tuple[str, str]] = {
    "SIGILL": ("an instruction this CPU lacks: the llama.cpp build is not portable",
               f"{REINSTALL}; until then DUET_CPU_VARIANT=x64 makes a portable build use its baseline CPU "
               "library"),
    "SIGSEGV": ("a crash inside llama.cpp or a GPU driver (segmentation fault)",
                f"{REINSTALL}; with a GPU, update its driver or hide it (CUDA_VISIBLE_DEVICES= duet doctor) to "
                "see whether the CPU alone works; report it with this output"),
    "SIGBUS": ("a crash reading a file (bus error): a model file changed or a disk failed while in use",
               "check the disk and the model files (`duet models list`); reinstall Duet if the demo model is damaged"),
    "SIGABRT": ("llama.cpp stopped on an internal check (often out of memory on a GPU)",
                "free memory (close other programs) and run it again; report it with this output if it stays"),
    "SIGFPE": ("an arithmetic fault inside llama.cpp", f"{REINSTALL}; report it with this output"),
    "SIGKILL": ("killed, often by the system when memory ran out",
                "close other programs and run it again (`dmesg | grep -i oom` says whether memory ran out)"),
    "SIGTERM": ("stopped by another program", "run it again"),
}
def describe_exit(returncode: int) -> tuple[str | None, str, str]:
    """(the signal's name or None, what happened, the fix) for a child that ended with ``returncode``."""
    name = exit_signal(returncode)
    if name is not None:
        cause, fix = _SIGNAL_CAUSES.get(name, ("ended by a signal", "run it again"))
        return name, f"the llama.cpp check's process died by {name}: {cause}", fix
    return None, f"the llama.cpp check's process exited with code {returncode}", \
        f"run `duet -v DEBUG doctor` for details; {REINSTALL}"


@dataclass
class Probe:
    """What the child reported (merged; partial when it died) and, when it did not finish, why."""

    data: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    stage: str = ""  # the last stage it started: "backends" or "step"
    failure: str = ""
    fix: str = ""
    signal_name: str | None = None

    def died_in(self, stage: str) -> bool:
        return not self.done and self.stage == stage


def probe_command() -> list[str]:
    """How to start the child: the same ``duet`` command, as the engine's process is started."""
    return app_command("doctor", "--child-probe")


def _tail(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][-limit:] if lines else ""


def run_probe(*, quick: bool = False, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Run ``duet doctor --child-probe`` and read what it reported; see the module docstring."""
    from app.core.assets import is_frozen

    cmd = probe_command() + (["--quick"] if quick else [])
    env = dict(os.environ)
    if not is_frozen():  # the child imports this very checkout, whatever its working directory
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    extra: dict[str, Any] = {}
    if sys.platform == "win32":
        extra["creationflags"] = subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8",
                           errors="replace", timeout=timeout, env=env, check=False, **extra)
    except subprocess.TimeoutExpired as e:
        probe = _parse(e.stdout.decode("utf-8", "replace") if isinstance(e.stdout, bytes) else e.stdout or "")
        probe.failure = (f"the llama.cpp check did not finish within {timeout:.0f} s "
                         f"(at {probe.stage or 'start-up'}) and was stopped")
        probe.fix = ("a GPU driver that hangs, or a computer far too busy or slow: close other programs and run "
                     "it again; `duet doctor --quick` checks the rest without running the model")
        return probe
    except OSError as e:
        return Probe(failure=f"the llama.cpp check could not start ({e})", fix=f"reinstall Duet; {REINSTALL}")
    probe = _parse(r.stdout)
    if probe.done and r.returncode == 0:
        return probe
    probe.done = False
    probe.signal_name, probe.failure, probe.fix = describe_exit(r.returncode)
    if r.returncode == 0:
        probe.failure = "the llama.cpp check's process ended without reporting its result"
    last = _tail(r.stderr)
    if last:
        probe.failure += f" (the last line it printed: {last})"
    return probe


def _parse(stdout: str) -> Probe:
    """Merge the child's JSON lines in order; anything else on its stdout is ignored."""
    probe = Probe()
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            part = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(part, dict):
            probe.stage = str(part.pop("stage", probe.stage))
            probe.done = bool(part.pop("done", probe.done))
            probe.data.update(part)
    return probe


# ---- CPU and GPU -------------------------------------------------------------------------------
# x86-64 micro-architecture levels as /proc/cpuinfo spells their flags (pni is SSE3, abm is LZCNT).
_X86_LEVELS = (
    ("x86-64-v2", {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ("x86-64-v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)
_AVX512_EXTRAS = (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI"), ("avx512_fp16", "FP16"), ("avx512vbmi", "VBMI"))
_AMX = (("amx_bf16", "BF16"), ("amx_int8", "INT8"), ("amx_fp16", "FP16"))
_NOT_ISA = {"LLAMAFILE", "OPENMP", "REPACK", "ACCELERATE", "KLEIDIAI"}


def x86_level(flags: set[str]) -> str | None:
    """The highest x86-64 level (v1…v4) whose flags are all present, or None for another architecture."""
    if not {"lm", "sse2"} <= flags:
        return None
    level = "x86-64-v1"
    for name, need in _X86_LEVELS:
        if not need <= flags:
            break
        level = name
    return level


def describe_host_cpu(flags: set[str], cores: int) -> str:
    """The CPU as the operating system reports it: x86-64 level, AVX-512 and AMX, cores."""
    level = x86_level(flags)
    if level is None:
        return f"{platform.machine() or 'unknown architecture'}, {cores} cores"
    parts = [level]
    if "avx512f" in flags:
        extras = [label for flag, label in _AVX512_EXTRAS if flag in flags]
        parts.append("AVX-512" + (f" ({', '.join(extras)})" if extras else ""))
    else:
        parts.append("no AVX-512")
    if "amx_tile" in flags:
        extras = [label for flag, label in _AMX if flag in flags]
        parts.append("AMX" + (f" ({', '.join(extras)})" if extras else ""))
    else:
        parts.append("no AMX")
    return f"{', '.join(parts)}; {cores} cores"


def check_cpu(probe: Probe) -> Check:
    from app.core.config import usable_cores
    from app.modelhub.llama_lib import host_cpu_flags

    host = describe_host_cpu(host_cpu_flags(), usable_cores())
    b = probe.data.get("backends")
    if b is None:
        if "backends_error" in probe.data:
            return Check("CPU", False, f"{host}; llama.cpp could not load: {probe.data['backends_error']}", REINSTALL)
        return Check("CPU", False, f"{host}; {probe.failure or 'llama.cpp did not load'}", probe.fix or REINSTALL)
    uses = [k for k, v in (probe.data.get("features") or {}).items() if v and k not in _NOT_ISA]
    uses_text = f"; it uses {' '.join(uses)}" if uses else ""
    if not b.get("dynamic"):
        return Check("CPU", True, f"{host}; llama.cpp's CPU code is built in (a build for this CPU family, "
                                  f"not portable to older CPUs){uses_text}")
    variants = ", ".join(b.get("variants") or []) or "none"
    if b.get("forced"):
        return Check("CPU", None, f"{host}; llama.cpp's CPU library: {b.get('cpu_variant')}, forced by "
                                  f"DUET_CPU_VARIANT (available: {variants}){uses_text}",
                     "unset DUET_CPU_VARIANT (or set it to auto) to let ggml choose the fastest library this CPU runs")
    return Check("CPU", True, f"{host}; llama.cpp's CPU library: {b.get('cpu_variant')}, chosen by ggml "
                              f"from {variants}{uses_text}")


def check_gpu(probe: Probe) -> Check:
    from app.modelhub.hardware import nvidia_smi_gpus

    b = probe.data.get("backends")
    if b is not None:
        gpus = [f"{desc or name} ({name})" for name, desc, kind in b.get("devices") or [] if kind in GPU_DEVICE_TYPES]
        if gpus:
            step = probe.data.get("step")
            ran = f"; the demo step ran on {step['device']}" if step else ""
            return Check("GPU", True, f"llama.cpp sees {'; '.join(gpus)}{ran}")
    present = nvidia_smi_gpus()
    names = ", ".join(g.name for g in present)
    if b is None:
        seen = f"{names} present; " if present else ""
        return Check("GPU", None, f"{seen}whether llama.cpp can use a GPU is unknown: it did not load (see CPU)")
    if present:
        return Check("GPU", None, f"{names} present, but this llama.cpp build has no GPU support: the model "
                                  "runs on the CPU",
                     "`make gpu` in a source checkout (or `python installer/build_llama.py --flavour cuda`), "
                     "or install the GPU build of the app")
    return Check("GPU", None, "none that llama.cpp can use: the model runs on the CPU")


def check_step(probe: Probe, quick: bool) -> Check:
    name = "Demo model"
    if quick:
        return Check(name, None, "one step not run (--quick)")
    step = probe.data.get("step")
    if step is not None:
        said = "stayed silent (NO REPLY)" if step.get("silent") else f"said {step.get('text', '')!r}"
        return Check(name, True, f"one step of {step.get('model')} on {step.get('device')}: {said} in "
                                 f"{step.get('ms', 0):.0f} ms (loading took {step.get('load_s', 0):.1f} s)")
    if "step_missing" in probe.data:
        return Check(name, None, f"no demo model to run a step with: {probe.data['step_missing']}",
                     "`duet train demo` (or `make run`) builds it; the installed app has it built in")
    if "step_error" in probe.data:
        return Check(name, False, f"one step failed: {probe.data['step_error']}", REINSTALL)
    if probe.died_in("step"):
        return Check(name, False, f"one step: {probe.failure}", probe.fix)
    return Check(name, False, "one step not run: llama.cpp did not load (see CPU)")


# ---- sound, camera, screen -------------------------------------------------------------------------
def check_voice() -> Check:
    """The path a spoken reply takes (docs/speech.md): the speech library and engine, the player, an output."""
    name = "Spoken replies"
    try:
        import pyttsx3  # noqa: F401 - only whether it is there
    except ImportError as e:
        return Check(name, False, f"the pyttsx3 speech library is missing ({e})", "reinstall Duet")
    if not sys.platform.startswith("linux"):
        service = {"win32": "SAPI", "darwin": "NSSpeechSynthesizer"}.get(sys.platform, "the system's")
        return Check(name, True, f"{service} speaks replies through the default sound output")
    from app.speech.check import PLAYER, espeak_library, sound_output

    library, player = espeak_library(), shutil.which(PLAYER)
    missing = [(what, pkg) for what, pkg, have in (("the espeak-ng speech engine", "espeak-ng", library),
                                                   (f"the `{PLAYER}` audio player", "alsa-utils", player)) if not have]
    if missing:
        return Check(name, False, f"{' and '.join(w for w, _ in missing)} missing: replies are shown, not spoken",
                     f"sudo apt-get install {' '.join(p for _, p in missing)}")
    output = sound_output()
    if output is None:
        return Check(name, None, f"espeak-ng and {PLAYER} are installed, but there is no sound output (no playback "
                                 "device in /dev/snd, no PulseAudio or PipeWire server): replies are shown, not spoken",
                     "connect speakers or headphones, or let your user play sound: sudo usermod -aG audio $USER, "
                     "then log in again")
    return Check(name, True, f"espeak-ng ({library}), {PLAYER} ({player}), {output}")


def check_camera(dev_glob: str = "/dev/video*") -> Check:
    name = "Camera"
    if not sys.platform.startswith("linux"):
        where = {"darwin": "System Settings › Privacy & Security › Camera",
                 "win32": "Settings › Privacy › Camera"}.get(sys.platform, "the system's settings")
        return Check(name, None, f"not checked here: the system asks for camera access on first use ({where})")
    nodes = sorted(glob.glob(dev_glob))
    if not nodes:
        return Check(name, None, "no camera found (no /dev/video* device): screens and video files need none",
                     "")
    usable = [n for n in nodes if os.access(n, os.R_OK | os.W_OK)]
    if not usable:
        return Check(name, False, f"{', '.join(nodes)} present, but your user may not open them",
                     "sudo usermod -aG video $USER, then log in again")
    return Check(name, True, ", ".join(_video_name(n) for n in usable))


def _video_name(node: str) -> str:
    try:
        label = (Path("/sys/class/video4linux") / Path(node).name / "name").read_text().strip()
    except OSError:
        label = ""
    return f"{node} ({label})" if label else node


def check_screen() -> Check:
    name = "Screen capture"
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return Check(name, None, "no display ($DISPLAY is unset: a headless session): the screen cannot be watched "
                                 "here; video files and cameras still work")
    from app.capture.base import CaptureError
    from app.capture.screen import ScreenSource, list_monitors

    src = ScreenSource(region=(0, 0, 1, 1))  # one pixel, grabbed once: the same path as watching the screen
    try:
        src.open()
        src.grab()
        monitors = list_monitors()[1:]
    except CaptureError as e:
        return Check(name, False, str(e), _screen_fix())
    finally:
        src.close()
    primary = next((m for m in monitors if m.primary), monitors[0] if monitors else None)
    where = f"display {os.environ['DISPLAY']}: " if os.environ.get("DISPLAY") else ""
    return Check(name, True, f"{where}{len(monitors)} monitor(s)"
                             + (f", {primary.width}×{primary.height} primary" if primary else "") + "; a test grab worked")


def _screen_fix() -> str:
    if sys.platform == "darwin":
        return "allow Duet in System Settings › Privacy & Security › Screen Recording, then restart Duet"
    if sys.platform.startswith("linux"):
        if os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
            return "log in to an X11 session, or enable XWayland"
        return "check that $DISPLAY names a running X server your user may use (xdpyinfo says)"
    return ""


# ---- all of them ---------------------------------------------------------------------------------
def _isolated(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one broken check must not hide the others' findings
        log.debug("the %s check failed", name, exc_info=True)
        return Check(name, False, f"the check itself failed: {type(e).__name__}: {e}",
                     "a bug in `duet doctor`: please report it with this line")


def run_checks(*, quick: bool = False, probe_timeout: float = PROBE_TIMEOUT) -> list[Check]:
    """Every check, in a fixed order; ``quick`` skips the demo model's step (the child still loads llama.cpp)."""
    try:
        probe = run_probe(quick=quick, timeout=probe_timeout)
    except Exception as e:  # noqa: BLE001 - as in _isolated
        log.debug("the llama.cpp probe failed", exc_info=True)
        probe = Probe(failure=f"the llama.cpp check itself failed: {type(e).__name__}: {e}",
                      fix="a bug in `duet doctor`: please report it with this line")
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("CPU", lambda: check_cpu(probe)),
        ("GPU", lambda: check_gpu(probe)),
        ("Demo model", lambda: check_step(probe, quick)),
        ("Spoken replies", check_voice),
        ("Camera", check_camera),
        ("Screen capture", check_screen),
    ]
    return [_isolated(name, fn) for name, fn in checks]
