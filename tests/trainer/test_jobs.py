"""Job plumbing: recipe errors, checkpoints (safetensors + JSON), disk, OOM advice, CPU fallback, GRPO math."""

from __future__ import annotations

import io
import json
from collections import namedtuple

import pytest
import torch

from app.trainer import jobs
from app.trainer.config import ConfigError, load_config
from app.trainer.grpo import clipped_loss_sum, group_advantages
from app.trainer.modeling import pick_device

RECIPE = "models/recipes/demo.toml"


def test_demo_recipe_loads_and_unknown_keys_are_named(tmp_path):
    cfg = load_config(RECIPE)
    assert cfg.data.tokens_per_frame == 16 and cfg.grpo.group == 4 and cfg.grpo.temperature == 1.2
    bad = tmp_path / "r.toml"
    bad.write_text("[sft]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"r.toml.sft: unknown key 'stepz'"):
        load_config(bad)
    bad.write_text("[sft]\nsteps = 'many'\n")
    with pytest.raises(ConfigError, match=r"sft.steps: expected an integer"):
        load_config(bad)


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.sum().backward()
    opt.step()
    path = jobs.save_checkpoint(tmp_path, {"w": p.detach()}, opt.state_dict(), {"step": 7, "losses": [1.0]})
    assert sorted(f.name for f in path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    model, opt_state, state = jobs.load_checkpoint(jobs.latest_checkpoint(tmp_path))
    assert state["step"] == 7 and torch.equal(model["w"], p.detach())
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.1)
    opt2.load_state_dict(opt_state)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_not_enough_disk_is_an_error_with_advice(tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(jobs.shutil, "disk_usage", lambda p: Usage(10, 10, 1000))
    with pytest.raises(jobs.JobError) as ei:
        jobs.save_checkpoint(tmp_path, {"w": torch.zeros(1000)}, {"state": {}, "param_groups": []}, {"step": 1})
    assert ei.value.kind == "disk" and "MiB free" in str(ei.value)
    assert not list(tmp_path.glob("step-*"))  # nothing half-written


def test_oom_gives_advice_not_a_trace():
    out = io.StringIO()
    rep = jobs.Reporter(out)

    def boom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert jobs.run_guarded(boom, rep, "sft") == jobs.EXIT_OOM
    ev = json.loads(out.getvalue().splitlines()[-1])
    assert ev["event"] == "error" and ev["kind"] == "oom" and "tokens_per_frame" in ev["advice"]
    assert "Traceback" not in out.getvalue()


def test_cuda_requested_without_gpu_falls_back_with_warning():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    dev, warning = pick_device("cuda")
    assert dev == "cpu" and "no CUDA GPU" in warning
    assert pick_device("cpu") == ("cpu", None)


def test_group_advantages_and_clip():
    a = group_advantages([1.0, 2.0, 3.0, 2.0])
    assert sum(a) == pytest.approx(0) and a[2] > 0 > a[0]
    assert group_advantages([0.5] * 4) == [0.0] * 4  # no signal from an all-equal group
    lp = torch.tensor([0.0, 0.0], requires_grad=True)
    old = torch.tensor([-1.0, 0.0])  # ratio e ≈ 2.72 on the first token: clipped at 1.2 for A > 0
    loss = clipped_loss_sum(lp, old, 1.0, 0.2)
    assert float(loss.detach()) == pytest.approx(-(1.2 + 1.0))
    loss.backward()
    assert lp.grad.tolist() == [0.0, -1.0]  # the clipped token gets no gradient
