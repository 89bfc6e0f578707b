"""`duet doctor`'s checks on this very machine: the real child process, real llama.cpp, the real demo model.

Crashes are real too: DUET_DOCTOR_PROBE_FAULT makes the child send itself a signal, and the parent must
name it and say what to do, never die with it or print a traceback.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from app.doctor import Check, format_check, run_checks
from app.doctor import checks as doctor
from app.doctor.probe import FAULT_ENV

from ..capture.conftest import display, xvfb  # noqa: F401 - fixtures for the screen check

NAMES = ["CPU", "GPU", "Demo model", "Spoken replies", "Camera", "Screen capture"]


@pytest.fixture(scope="module")
def real_checks(tmp_path_factory: pytest.TempPathFactory) -> list[Check]:
    with pytest.MonkeyPatch.context() as mp:  # the autouse fixture is per test; this runs once for the module
        mp.setenv("DUET_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        mp.delenv("DUET_ASSETS_DIR", raising=False)
        mp.delenv("DUET_CPU_VARIANT", raising=False)
        return run_checks()


def test_the_real_checks_on_this_machine(real_checks: list[Check]) -> None:
    assert [c.name for c in real_checks] == NAMES
    by = {c.name: c for c in real_checks}
    cpu, step = by["CPU"], by["Demo model"]
    assert cpu.ok is True, cpu
    assert "CPU library" in cpu.detail or "built in" in cpu.detail
    if platform.machine() in ("x86_64", "AMD64") and sys.platform.startswith("linux"):
        assert "x86-64-v" in cpu.detail and "AVX-512" in cpu.detail and "AMX" in cpu.detail
    assert step.ok is True, step
    assert "demo" in step.detail and " ms " in step.detail and "loading took" in step.detail
    for c in real_checks:
        assert c.detail and "Traceback" not in c.detail
        assert c.ok is not False or c.fix, c  # every problem comes with its fix
    lines = [line for c in real_checks for line in format_check(c)]
    assert lines[0].startswith(("✓ CPU: ", "– CPU: "))


def test_quick_skips_the_step_but_still_loads_llama_cpp() -> None:
    probe = doctor.run_probe(quick=True)
    assert probe.done and "backends" in probe.data and "step" not in probe.data
    assert any(kind == 0 for _, _, kind in probe.data["backends"]["devices"])  # the CPU device
    step = doctor.check_step(probe, quick=True)
    assert step.ok is None and "--quick" in step.detail


def test_a_check_that_raises_becomes_a_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_camera() -> Check:
        raise RuntimeError("the camera check broke")

    def broken_probe(**_: object) -> doctor.Probe:
        raise ValueError("the probe broke")

    monkeypatch.setattr(doctor, "check_camera", broken_camera)
    monkeypatch.setattr(doctor, "run_probe", broken_probe)
    checks = {c.name: c for c in run_checks(quick=True)}
    assert list(checks) == NAMES
    cam = checks["Camera"]
    assert cam.ok is False and "RuntimeError: the camera check broke" in cam.detail and cam.fix
    cpu = checks["CPU"]
    assert cpu.ok is False and "ValueError: the probe broke" in cpu.detail and cpu.fix
    assert checks["Demo model"].ok is None  # quick: not run either way
    assert checks["Spoken replies"].ok is not False or checks["Spoken replies"].fix


@pytest.mark.parametrize(("fault", "words"), [
    ("SIGSEGV", "segmentation fault"),
    ("SIGILL", "instruction this CPU lacks"),
    ("SIGKILL", "memory"),
])
def test_a_child_killed_by_a_signal_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch, fault: str,
                                                          words: str) -> None:
    monkeypatch.setenv(FAULT_ENV, fault)
    checks = {c.name: c for c in run_checks()}
    cpu = checks["CPU"]
    assert cpu.ok is False and fault in cpu.detail and words in cpu.detail, cpu
    assert cpu.fix and "Traceback" not in cpu.detail
    step = checks["Demo model"]
    assert step.ok is False and "did not load" in step.detail
    if fault == "SIGILL":
        assert "make venv" in cpu.fix and "DUET_CPU_VARIANT=x64" in cpu.fix


def test_a_crash_during_the_step_fails_the_step_not_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "step:SIGABRT")
    checks = {c.name: c for c in run_checks()}
    assert checks["CPU"].ok is True  # the backends loaded and were reported before the step
    step = checks["Demo model"]
    assert step.ok is False and "SIGABRT" in step.detail and step.fix


def test_a_child_that_hangs_is_stopped_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "hang")
    probe = doctor.run_probe(timeout=3)
    assert not probe.done and "did not finish within 3 s" in probe.failure and probe.fix
    cpu = doctor.check_cpu(probe)
    assert cpu.ok is False and "did not finish" in cpu.detail


def test_the_installed_app_runs_itself_as_the_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert doctor.probe_command()[1:] == ["-m", "app", "doctor", "--child-probe"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert doctor.probe_command() == [sys.executable, "doctor", "--child-probe"]


def test_exit_codes_in_words() -> None:
    assert doctor.describe_exit(-11)[0] == "SIGSEGV"
    name, what, fix = doctor.describe_exit(0xC000001D)  # Windows: an illegal instruction
    assert name == "SIGILL" and "instruction this CPU lacks" in what and fix
    name, what, fix = doctor.describe_exit(3)
    assert name is None and "code 3" in what and "duet -v DEBUG doctor" in fix


def test_x86_levels() -> None:
    base = {"lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"}
    v2 = base | {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert [doctor.x86_level(f) for f in (base, v2, v3, v4, set())] == [
        "x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4", None]
    assert doctor.x86_level(v4 - {"pni"}) == "x86-64-v1"  # a level needs every lower one
    text = doctor.describe_host_cpu(v4 | {"avx512_bf16", "amx_tile", "amx_int8"}, 8)
    assert text == "x86-64-v4, AVX-512 (BF16), AMX (INT8); 8 cores"
    assert doctor.describe_host_cpu(v3, 2) == "x86-64-v3, no AVX-512, no AMX; 2 cores"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/video* is Linux's")
def test_camera(tmp_path: Path) -> None:
    none = doctor.check_camera(str(tmp_path / "video*"))
    assert none.ok is None and "no camera found" in none.detail
    (tmp_path / "video0").touch()
    found = doctor.check_camera(str(tmp_path / "video*"))
    assert found.ok is True and str(tmp_path / "video0") in found.detail


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux speech path")
def test_voice_names_the_missing_player_and_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor.check_voice()
    assert real.ok is not False, real  # `make sysdeps` installs espeak-ng and alsa-utils
    monkeypatch.setattr("shutil.which", lambda name: None)
    c = doctor.check_voice()
    assert c.ok is False and "aplay" in c.detail and c.fix == "sudo apt-get install alsa-utils"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11")
def test_screen_capture(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    headless = doctor.check_screen()
    assert headless.ok is None and "headless" in headless.detail
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    wayland = doctor.check_screen()
    assert wayland.ok is False and "XWayland" in wayland.fix
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("DISPLAY", ":4987")  # nobody's
    gone = doctor.check_screen()
    assert gone.ok is False and ":4987" in gone.detail and gone.fix
    xdisplay = request.getfixturevalue("display")  # a real Xvfb, 640×480
    live = doctor.check_screen()
    assert live.ok is True and f"display {xdisplay}" in live.detail and "640×480" in live.detail, live
