"""The training-runtime dialog installs with a progress bar, reports failures, and removes; in a source
install that already has PyTorch it offers no install at all.

A real virtual environment is made (``python -m venv``), with nothing heavy installed in it
(``torch_spec=None``): the same code path as the PyTorch install, minutes shorter. The installed app
(no PyTorch in its interpreter) is seen from this checkout by naming a package that is not installed
among what training ``needs``; the checkout's own PyTorch is real (the ``train`` extra).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from app.trainer.runtime import TrainerRuntime
from app.ui.runtime_dialog import RuntimeDialog

ABSENT = ("duet_no_such_package",)  # this interpreter cannot train: the installed app's view
LIGHT = "import json, sys; print(json.dumps({'torch': 'none', 'cuda': False, 'python': sys.version.split()[0]}))"


def test_install_shows_progress_then_remove(qtbot, tmp_path: Path) -> None:
    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code=LIGHT)
    d = RuntimeDialog(runtime=rt, needs=ABSENT)
    qtbot.addWidget(d)
    assert d.state_label.text().startswith("absent") and d.install_button.text() == "Install"
    assert not d.remove_button.isEnabled()
    seen: list[int] = []
    d.bar.valueChanged.connect(seen.append)
    d.install_button.click()
    assert d.busy and not d.close_button.isEnabled()
    qtbot.waitUntil(lambda: not d.busy, timeout=60_000)
    assert d.state_label.text().startswith("ready") and d.bar.value() == 1000
    assert seen and seen == sorted(seen)
    assert not d.install_button.isEnabled() and d.remove_button.isEnabled()
    d.remove_button.click()
    assert not rt.root.exists() and d.state_label.text().startswith("absent")


def test_a_failed_install_is_explained_and_can_be_retried(qtbot, tmp_path: Path, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: shown.append(text))
    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code="import torch_is_not_here")
    d = RuntimeDialog(runtime=rt, needs=ABSENT)
    qtbot.addWidget(d)
    d.install()
    qtbot.waitUntil(lambda: not d.busy, timeout=60_000)
    assert shown and "does not import PyTorch" in shown[0]
    assert d.state_label.text().startswith("incomplete") and d.install_button.text() == "Repair"
    assert d.install_button.isEnabled()


def test_remove_while_another_duet_installs_says_so(qtbot, tmp_path: Path) -> None:
    import subprocess
    import sys

    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code=LIGHT)
    rt.install()
    d = RuntimeDialog(runtime=rt, needs=ABSENT)
    qtbot.addWidget(d)
    lock = rt.root.with_name(rt.root.name + ".lock")  # what an install in another process holds
    other = subprocess.Popen([sys.executable, "-c", "import sys; from filelock import FileLock; "
                              f"held = FileLock({str(lock)!r}); held.acquire(); print('held', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        d.remove_button.click()
        assert d.step_label.text().startswith("not removed: cannot remove the training runtime now: another Duet")
        assert rt.status().ready
    finally:
        other.stdin.close()
        other.wait(30)
    d.remove_button.click()
    assert d.step_label.text() == "removed" and not rt.root.exists()


def test_a_source_install_with_pytorch_is_offered_no_install(qtbot, tmp_path: Path) -> None:
    """This checkout has torch, transformers and peft: the dialog names them and has no Install button."""
    import importlib.metadata

    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code=LIGHT)
    d = RuntimeDialog(runtime=rt)
    qtbot.addWidget(d)
    said = d.own_label.text()
    assert said.startswith("This install already has PyTorch " + importlib.metadata.version("torch"))
    assert "nothing to install" in said and "peft" in said and not d.own_label.isHidden()
    assert d.install_button.isHidden() and d.bar.isHidden() and "1.5 GB" not in d.intro.text()
    assert d.state_label.isHidden()  # no "absent: run `duet train runtime install`" advice either
    d.install()  # nothing starts even if called
    assert not d.busy and not rt.root.exists()


def test_a_leftover_private_runtime_is_named_unused_and_removable(qtbot, tmp_path: Path) -> None:
    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code=LIGHT)
    rt.install()
    d = RuntimeDialog(runtime=rt)
    qtbot.addWidget(d)
    assert d.state_label.text().startswith("a private runtime is also installed, unused")
    d.remove_button.click()
    assert not rt.root.exists() and d.state_label.isHidden()


def test_pytorch_without_the_rest_says_what_is_missing_and_offers_the_runtime(qtbot, tmp_path: Path) -> None:
    rt = TrainerRuntime(tmp_path / "rt", torch_spec=None, requirements=[], verify_code=LIGHT)
    d = RuntimeDialog(runtime=rt, needs=("torch", "duet_no_such_package"))
    qtbot.addWidget(d)
    assert "but not duet_no_such_package" in d.own_label.text() and "pip install -e '.[train]'" in d.own_label.text()
    assert not d.install_button.isHidden() and d.install_button.isEnabled()
    assert d.state_label.text().startswith("absent")
