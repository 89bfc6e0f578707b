"""The Train page runs a real `duet train feedback` process: start, live progress, cancel, resume, use the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core import feedback as fbk
from app.core.sessions import SessionStore, add_mark, load_session, session_meta
from app.core.types import Frame, StepResult
from app.eval.synthetic import make_video
from app.modelhub.library import ModelLibrary
from app.ui.train_page import TrainPage


def _marked_session(root: Path, video: Path) -> SessionStore:
    store = SessionStore(root)
    w = store.create(session_meta(str(video), "tiny", interval=1.0, frames_per_turn=2, tokens_per_frame=16,
                                  talkativeness=0.0, video=str(video)))
    img = np.zeros((8, 8, 3), np.uint8)
    for i, text in enumerate(["NO REPLY", "NO REPLY", "A red circle appeared.", "NO REPLY"]):
        t = 2.0 * (i + 1)
        w.add_step(StepResult(turn=i, video_time=t, text=text, silent=text == "NO REPLY",
                              frames=(Frame(img, time=t - 1), Frame(img, time=t))), thumbnail=False)
    w.close("ended")
    add_mark(w.directory, fbk.make("wrong", 6.0, load_session(w.directory).steps, text="A blue square appeared."))
    return store


@pytest.fixture
def page_env(qtbot, tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    video = tmp_path / "clip.avi"
    make_video("appear", "easy", 0, seed=3).write(video)
    store = _marked_session(tmp_path / "data" / "sessions", video)
    return store, tiny_model.hf_dir, tmp_path / "data"


def test_start_progress_cancel_resume_and_use_the_model(qtbot, page_env) -> None:
    store, base, data = page_env
    page = TrainPage(store, poll_ms=100)
    qtbot.addWidget(page)
    page.show()
    assert page.data_combo.itemText(0).endswith("(1)")  # one session carries feedback
    page.base_combo.setEditText(str(base))
    page.name_edit.setText("mine")
    page.steps_spin.setValue(40)
    page.max_steps_spin.setValue(40)  # one round: the random tiny model cannot learn the correction anyway
    assert page.start()
    assert page.cancel_button.isEnabled() and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: len(page.curves.loss) >= 1, timeout=180_000)  # live progress from the process
    assert page.progress.maximum() == 40
    page.cancel()
    qtbot.waitUntil(lambda: not page.job.running(), timeout=180_000)
    page.poll()
    assert page.job.outcome(page.events) == "cancelled"
    assert page.resume_button.isEnabled() and not page.use_button.isEnabled()
    done_steps = len(page.curves.loss)
    assert done_steps < 40
    assert list((data / "train" / "mine" / "sft" / "ckpt").glob("step-*"))

    assert page.resume()
    qtbot.waitUntil(lambda: page.use_button.isEnabled(), timeout=300_000)
    resumed = [e for e in page.events if e["event"] == "resume"]
    assert resumed and resumed[-1]["step"] == done_steps  # continued from its checkpoint, not from zero
    assert [s for s, _ in page.curves.loss] == list(range(1, 41))
    assert ModelLibrary(data / "models").get("mine") is not None
    with qtbot.waitSignal(page.use_model) as sig:
        page.use_button.click()
    assert sig.args == ["mine"]

    # the window closed and opened again: a new page finds the job and its curves
    again = TrainPage(store)
    qtbot.addWidget(again)
    assert again.job is not None and again.job.folder == page.job.folder
    assert again.trained_name() == "mine" and len(again.curves.loss) == 40


def test_bad_choices_are_explained_and_start_nothing(qtbot, page_env) -> None:
    store, base, data = page_env
    page = TrainPage(store)
    qtbot.addWidget(page)
    page.base_combo.setEditText(str(base))
    page.name_edit.setText("bad name!")
    assert not page.start() and "Name the new model" in page.status.text()
    page.name_edit.setText("ok")
    page.data_combo.setCurrentIndex(page.data_combo.findData("folder"))
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("sft"))
    page.folder_edit.setText(str(data / "nothing-here"))
    assert not page.start() and "no dataset file" in page.status.text()
    page.data_combo.setCurrentIndex(page.data_combo.findData("sessions"))
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("sft_grpo"))
    assert not page.start() and "GRPO needs clips with gold answers" in page.status.text()
    assert page.job is None and not (data / "train" / "ok").exists()


def test_use_this_model_selects_it_in_the_window(make_window) -> None:
    w = make_window()
    w.train_page.use_model.emit("my-duet")
    assert w.settings.session.model == "my-duet"
    assert w.watch.model_combo.currentData() == "my-duet"


def test_several_gpus_are_offered_and_reach_the_command_line(qtbot, page_env, monkeypatch) -> None:
    """With 4 CUDA GPUs (what PyTorch would list; none exist here, so the list is given at that boundary) the page
    offers 2 and 4 of them, and the choice becomes `--gpus N` for torchrun; one device adds no flag."""
    import app.trainer.distributed as distributed

    store, _base, _data = page_env
    four = [{"kind": "cpu", "name": "CPU", "gpus": 0}] + [
        {"kind": "cuda", "index": i, "name": "GPU", "memory_gib": 80.0, "gpus": i + 1} for i in range(4)]
    monkeypatch.setattr(distributed, "available_devices", lambda: four)
    page = TrainPage(store, poll_ms=100)
    qtbot.addWidget(page)
    page.refresh()
    offered = [page.devices_combo.itemData(i) for i in range(page.devices_combo.count())]
    assert offered == [1, 2, 4]
    assert "--gpus" not in page.command()
    page.devices_combo.setCurrentIndex(page.devices_combo.findData(2))
    assert page.command()[-2:] == ["--gpus", "2"]
    monkeypatch.setattr(distributed, "available_devices", lambda: four[:1])
    other = TrainPage(store, poll_ms=100)
    qtbot.addWidget(other)
    other.refresh()
    assert other.devices_combo.count() == 1  # no GPU: one device only
