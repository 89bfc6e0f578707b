"""The trainer's private runtime: variant choice, requirements, and the venv's whole life cycle.

The life-cycle tests make real virtual environments (``python -m venv``) with nothing heavy in them
(``torch_spec=None``, no requirements, a trivial verification): interrupted, damaged, repaired,
removed. The real install with PyTorch is exercised once by hand (installer/README.md gives the
command and the measured time) and by ``test_real_install_runs_a_training_job`` when
DUET_TEST_RUNTIME_INSTALL=1, because it downloads and unpacks about a gigabyte.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from app.trainer import runtime
from app.trainer.runtime import RuntimeSetupError, TrainerRuntime

REPO = Path(__file__).resolve().parents[2]
LIGHT = "import json, sys; print(json.dumps({'torch': 'none', 'cuda': False, 'python': sys.version.split()[0]}))"


def light(root: Path) -> TrainerRuntime:
    return TrainerRuntime(root, torch_spec=None, requirements=[], verify_code=LIGHT)


SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
"""


def test_the_torch_build_follows_the_driver() -> None:
    assert runtime.cuda_version_from_smi(SMI) == (12, 4)
    assert runtime.cuda_version_from_smi("command not found") is None
    assert runtime.pick_variant(None) == "cpu"
    assert runtime.pick_variant((12, 4)) == "cpu"  # older than every CUDA build of the pinned torch
    assert runtime.pick_variant((12, 6)) == "cu126"
    assert runtime.pick_variant((12, 8)) == "cu128"
    assert runtime.pick_variant((13, 0)) == "cu128"


def test_variant_and_index_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUET_TORCH_VARIANT", "cu126")
    assert runtime.detect_variant() == "cu126"
    monkeypatch.delenv("DUET_TORCH_INDEX_URL", raising=False)
    assert runtime.torch_index("cpu") == "https://download.pytorch.org/whl/cpu"
    assert runtime.torch_index("default") is None
    monkeypatch.setenv("DUET_TORCH_INDEX_URL", "")
    assert runtime.torch_index("cpu") is None


def test_requirements_come_from_the_apps_own_pins() -> None:
    reqs = runtime.trainer_requirements(REPO / "pyproject.toml")
    names = [r.split("=")[0].split(">")[0].lower() for r in reqs]
    assert "llama-cpp-python==0.3.36" in reqs  # the engine's pin, without the [server] extra
    assert {"transformers", "peft", "gguf", "numpy"} <= set(names)
    assert not {"torch", "pyside6", "pywhispercpp", "sounddevice"} & set(names)


def test_life_cycle_absent_ready_broken_repaired_removed(tmp_path: Path) -> None:
    rt = light(tmp_path / "rt")
    assert rt.status().state == "absent"
    events: list[dict] = []
    st = rt.install(events.append)
    assert st.ready and st.info is not None and st.info["torch"] == "none"
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert rt.install().ready  # idempotent
    # Deleted halfway: the interpreter is gone.
    shutil.rmtree(rt.python.parent)
    st = rt.status()
    assert st.state == "broken" and "does not start" in st.detail and "install" in st.describe()
    events.clear()
    assert rt.install(events.append).ready
    assert any(e["phase"] == "repair" for e in events)
    assert rt.remove() and not rt.root.exists() and rt.status().state == "absent"
    assert not rt.remove()


def test_an_interrupted_install_is_incomplete_and_resumes(tmp_path: Path) -> None:
    rt = light(tmp_path / "rt")
    rt.install()
    made = rt.python.stat().st_mtime_ns
    rt.record.unlink()  # what a kill before the last step leaves
    assert rt.status().state == "incomplete"
    assert rt.install().ready
    assert rt.python.stat().st_mtime_ns == made  # the usable venv was kept, not remade


def test_a_second_install_or_removal_meanwhile_is_refused_and_the_first_finishes(tmp_path: Path) -> None:
    """Two processes, as with the app and a terminal: the second is told to wait, the first is not disturbed."""
    import subprocess
    import sys
    import time

    ready, go = tmp_path / "verifying", tmp_path / "go"
    # The first install holds still in its verification step until the test lets it go.
    hold = (f"import json, os, sys, time; open({str(ready)!r}, 'w').close()\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
            "print(json.dumps({'torch': 'none', 'cuda': False, 'python': sys.version.split()[0]}))")
    child = ("import sys; from app.trainer.runtime import TrainerRuntime\n"
             f"rt = TrainerRuntime({str(tmp_path / 'rt')!r}, torch_spec=None, requirements=[], verify_code=sys.argv[1])\n"
             "print(rt.install().state)")
    first = subprocess.Popen([sys.executable, "-c", child, hold], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():  # the first install is inside its lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first install never reached its verification"
            time.sleep(0.02)
        second = light(tmp_path / "rt")
        with pytest.raises(RuntimeSetupError, match="cannot install the training runtime now: another Duet"):
            second.install()
        with pytest.raises(RuntimeSetupError, match="cannot remove the training runtime now"):
            second.remove()
        assert second.venv.exists()
    finally:
        go.touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and out.split() == ["ready"], err
    assert second.status().ready and second.install().ready  # and now it is ready here too
    assert second.remove() and second.status().state == "absent"


def test_a_failed_verification_is_reported_not_recorded(tmp_path: Path) -> None:
    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code="import torch_is_not_here")
    with pytest.raises(RuntimeSetupError, match="does not import PyTorch"):
        rt.install()
    assert rt.status().state == "incomplete"


def test_an_unwritable_data_folder_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RuntimeSetupError, match="cannot write to .*DUET_DATA_DIR"):
        light(blocker / "rt").install()


def test_without_torch_a_job_asks_for_the_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from app.trainer import cli

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(runtime, "torch_importable", lambda: False)
    rc = cli.main(["train", "sft", str(REPO / "models" / "recipes" / "demo.toml")])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 2 and err["kind"] == "runtime" and "duet train runtime install" in err["advice"]


def test_runtime_cli_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))
    assert runtime.cmd_runtime("status", as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["state"] == "absent"
    assert runtime.cmd_runtime("bogus") == 2
    assert runtime.cmd_runtime("remove") == 0


@pytest.mark.skipif(os.environ.get("DUET_TEST_RUNTIME_INSTALL") != "1",
                    reason="downloads ~1 GB; run once with DUET_TEST_RUNTIME_INSTALL=1")
def test_real_install_runs_a_training_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CPU PyTorch (from local disk here) + the trainer's pins; then a 3-step SFT job runs inside it."""
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DUET_TORCH_VARIANT", "cpu")
    monkeypatch.setenv("DUET_TORCH_INDEX_URL", "")
    rt = TrainerRuntime()
    st = rt.install(print)
    assert st.ready and st.info["torch"].startswith(runtime.TORCH_VERSION)
    import subprocess

    cmd, env = rt.job_command(["sft", str(REPO / "models" / "recipes" / "demo.toml"), "--quiet",
                               f"--set=out_dir='{tmp_path / 'job'}'", "--set=sft.steps=3"])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in io.StringIO((tmp_path / "job" / "progress.jsonl").read_text())]
    assert events[-1]["event"] == "done" and events[-1]["stage"] == "sft"


def test_platform_paths_and_choices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Windows and macOS branches, checked here where they can be (CI cannot run those OSes)."""
    import sys

    monkeypatch.delenv("DUET_TORCH_VARIANT", raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    assert TrainerRuntime(tmp_path).python == tmp_path / "venv" / "Scripts" / "python.exe"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert runtime.detect_variant() == "default"  # PyPI's macOS build (MPS), no CUDA index
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert runtime.detect_variant() == "cpu"
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 570.86  Driver Version: 570.86  CUDA Version: 12.8 |'\n")
    smi.chmod(0o755)
    assert runtime.detect_variant() == "cu128"


def test_frozen_jobs_run_the_bundled_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    monkeypatch.setenv("DUET_PYTHON", "/usr/bin/python3")
    assert runtime.source_root() == tmp_path / "src"
    assert runtime.find_base_python() == "/usr/bin/python3"
    cmd, env = TrainerRuntime(tmp_path / "rt").job_command(["sft", "r.toml"])
    assert cmd[1:] == ["-m", "app.trainer.cli", "sft", "r.toml"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "src")
