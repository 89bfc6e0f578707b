"""`duet train … --gpus 2` for real: torchrun, two gloo processes on the CPU, against one process.

Each run is a real `python -m app.trainer.cli` process (torchrun's for --gpus 2) on the demo recipe's tiny model
with a few steps. What must hold:

* 2 processes with the same global batch reach the weights of 1 process (max |Δ| ≤ TOL: the ranks' gradients
  are summed in another order than one process accumulates them); the demo's full fine-tune is sharded by FSDP2;
* a rank SIGKILLed mid-run (DUET_TRAIN_FAULT) is restarted by torchrun, resumes from the last checkpoint and
  ends on the same weights as the uninterrupted 2-process run;
* a checkpoint written by 2 processes (gathered from FSDP's shards) resumes in 1 process;
* GRPO's rollouts are split over the ranks and their rewards gathered: the same rewards as 1 process;
* `duet train feedback --gpus 2` (its rounds: every rank trains, rank 0 verifies on the engine) gives the verdicts
  and the weights of 1 process, with a rank killed mid-round; "nothing to learn" is refused before launch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from app.trainer import distributed

REPO = Path(__file__).resolve().parents[2]
TOL = 2e-5  # max |Δ| of any weight, 2 processes against 1 (float32; measured 0 to 5.3e-6, docs/scaling.md)
DATA = ["data.train_synthetic.per_family=2", 'data.train_synthetic.families=["appear","count"]',
        "data.heldout_synthetic=false", "data.nqna_fraction=0.5"]
SFT = ["sft.batch=4", "sft.warmup=2", "sft.ckpt_every=2", *DATA]


def _run(out: Path, action: str, sets: list[str], *, gpus: int = 1, env: dict[str, str] | None = None,
         timeout: int = 300) -> tuple[int, list[dict]]:
    args = [sys.executable, "-m", "app.trainer.cli", action, "models/recipes/demo.toml", "--set", f'out_dir="{out}"']
    for s in sets:
        args += ["--set", s]
    if gpus != 1:
        args += ["--gpus", str(gpus)]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})})
    events = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.returncode, events


def _max_delta(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    _, ev = _run(out, "sft", ["sft.steps=4", *SFT])
    assert [e["event"] for e in ev].count("step") == 4
    return out


def test_two_processes_reach_the_weights_of_one(one_process, tmp_path):
    _, ev = _run(tmp_path, "sft", ["sft.steps=4", *SFT], gpus=2)
    start = next(e for e in ev if e["event"] == "start")
    assert start["processes"] == 2 and start["fsdp"] is True  # a full fine-tune: sharded by FSDP2, not DDP
    assert [e["event"] for e in ev].count("step") == 4  # rank 0 alone reports
    delta = _max_delta(one_process / "sft" / "final", tmp_path / "sft" / "final")
    assert delta <= TOL, f"2 processes moved the weights by {delta} from 1 process"
    one = json.loads((one_process / "sft" / "summary.json").read_text())["losses"]
    two = json.loads((tmp_path / "sft" / "summary.json").read_text())["losses"]
    assert two == pytest.approx(one, abs=1e-4)  # each step's loss is the global batch's, summed over the ranks


def test_evaluating_a_sharded_model_leaves_its_training_alone(tmp_path):
    """The held-out evaluation at step 0 gathers the shards onto rank 0; gathering the optimizer's state too would
    make torch create it with a zero-lr step, one AdamW step count ahead of one process from then on."""
    # One held-out clip: the gather is what is tested, not the evaluation; rank 0 evaluates three times while the
    # other rank waits, so the two-process run gets a longer limit than a plain one (it took > 300 s on a slow run).
    held = ["sft.eval_every=2", "sft.eval_limit=1", "data.heldout_synthetic.per_family=1"]
    sets = ["sft.steps=3", *[s for s in SFT if not s.startswith("data.heldout")], *held]
    _, one = _run(tmp_path / "one", "sft", sets)
    _, two = _run(tmp_path / "two", "sft", sets, gpus=2, timeout=900)
    assert [e["step"] for e in two if e["event"] == "eval"] == [0, 2, 3]
    assert [e["loss"] for e in two if e["event"] == "step"] == pytest.approx(
        [e["loss"] for e in one if e["event"] == "step"], abs=1e-4)
    assert _max_delta(tmp_path / "one" / "sft" / "final", tmp_path / "two" / "sft" / "final") <= TOL


def test_a_killed_rank_is_restarted_and_the_run_resumes(one_process, tmp_path):
    # rank 1 dies (SIGKILL, no clean-up) at step 3, after the step-2 checkpoint; torchrun restarts both ranks
    _, ev = _run(tmp_path, "sft", ["sft.steps=4", *SFT], gpus=2, env={distributed.FAULT_ENV: "kill:1:sft:3"})
    kinds = [e["event"] for e in ev]
    assert "resume" in kinds and kinds[-1] == "done"
    resumed = next(e for e in ev if e["event"] == "resume")
    assert resumed["step"] == 2
    assert _max_delta(one_process / "sft" / "final", tmp_path / "sft" / "final") <= TOL


def test_a_two_process_checkpoint_resumes_in_one_process(one_process, tmp_path):
    _run(tmp_path, "sft", ["sft.steps=2", *SFT], gpus=2)  # stops at the step-2 checkpoint
    _, ev = _run(tmp_path, "sft", ["sft.steps=4", *SFT])  # the same recipe, 4 steps, one process
    assert next(e for e in ev if e["event"] == "resume")["step"] == 2
    assert _max_delta(one_process / "sft" / "final", tmp_path / "sft" / "final") <= TOL


def test_grpo_rollouts_are_split_over_the_ranks(one_process, tmp_path):
    grpo = ["grpo.steps=2", "grpo.clips_per_step=2", "grpo.group=2", "grpo.max_new_tokens=8", "grpo.ckpt_every=2",
            *DATA]
    outs = []
    for gpus in (1, 2):
        out = tmp_path / f"g{gpus}"
        (out / "sft").mkdir(parents=True)
        subprocess.run(["cp", "-r", str(one_process / "sft" / "final"), str(out / "sft")], check=True)
        _, ev = _run(out, "grpo", grpo, gpus=gpus)
        outs.append((out, [e for e in ev if e["event"] == "step"]))
    (a, one), (b, two) = outs
    assert [s["reward"] for s in two] == [s["reward"] for s in one]  # every clip's rewards gathered from its rank
    assert [s["trained_rollouts"] for s in two] == [s["trained_rollouts"] for s in one]
    assert _max_delta(a / "grpo" / "final", b / "grpo" / "final") <= TOL


def test_a_batch_the_ranks_cannot_share_is_refused_before_launch(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app.trainer.cli", "sft", "models/recipes/demo.toml", "--gpus", "3",
                        "--set", f'out_dir="{tmp_path}"', "--set", "sft.batch=4"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2
    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["kind"] == "config" and "sft.batch = 4" in ev["message"] and "--gpus 2 or 4" in ev["advice"]
    assert not (tmp_path / "sft").exists()


@pytest.fixture(scope="module")
def marked_session(bundled_demo_model, tmp_path_factory) -> tuple[Path, str, str]:
    """(DUET_DATA_DIR, the id of a session with one "wrong" correction in new words, the id of one with no mark)."""
    from app.core.sessions import SessionStore, load_session
    from app.trainer.feedback_scenario import PLANS, make_clips, marked_sessions, record_session

    root = tmp_path_factory.mktemp("feedback")
    store = SessionStore(root / "data" / "sessions")
    (marked,) = marked_sessions(store, root / "clips", *bundled_demo_model, plans=PLANS[:1])
    video, question = make_clips(root / "clips")[PLANS[0].clip]
    plain = record_session(store, video, question, *bundled_demo_model)
    return root / "data", load_session(marked).id, load_session(plain).id


# The smallest real feedback job: the demo's replay set cut to 2 clips a family, no held-out clips (no forgetting
# check), one dialogue per rank and step (so 2 processes sum each gradient exactly as 1 does), rounds of 25 steps.
# The correction ("Look, a blue ring popped in!" for the demo's "A blue square appeared.") is not said after 25
# steps and is after 50 (measured; 40 is not enough either), so the two rounds give two different verdicts.
FEEDBACK = ["--steps", "25", "--max-steps", "50", "--max-minutes", "0", "--set", "sft.batch=2",
            "--set", "data.heldout_synthetic=false", "--set", "data.train_synthetic.per_family=2"]


def _feedback(data: Path, base: Path, name: str, args: list[str], *, gpus: int = 1, code: int = 0,
              env: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    """Run ``duet train feedback`` as the Train page does (``--quiet``: words on stdout, events in progress.jsonl)."""
    from app.trainer.jobs import gpus_args

    cmd = [sys.executable, "-m", "app.trainer.cli", "feedback", "--quiet", "--base", str(base), "--name", name,
           *args, *gpus_args(gpus)]  # what the page appends for its device choice
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DUET_DATA_DIR": str(data),
                            **(env or {})})
    progress = data / "train" / name / "progress.jsonl"
    events = [json.loads(x) for x in progress.read_text().splitlines()] if progress.is_file() else []
    assert r.returncode == code, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout, events


def test_a_feedback_fine_tune_on_two_processes_reaches_the_verdicts_and_weights_of_one(marked_session,
                                                                                        bundled_demo_hf):
    data, marked, _ = marked_session
    one_out, one = _feedback(data, bundled_demo_hf, "one", ["--sessions", marked, *FEEDBACK])
    # rank 1 is SIGKILLed at step 30, in the second round; torchrun restarts both, which go on from the step-25
    # checkpoint and the round already verified (rounds.json), not from the first round again
    two_out, two = _feedback(data, bundled_demo_hf, "two", ["--sessions", marked, *FEEDBACK], gpus=2,
                             env={distributed.FAULT_ENV: "kill:1:sft:30"})

    def verdicts(events: list[dict]) -> list[tuple]:
        return [(e["step"], [(v["ok"], v["said"]) for v in e["verdicts"]]) for e in events
                if e["event"] == "verdicts"]

    assert [(step, [ok for ok, _ in vs]) for step, vs in verdicts(one)] == [(25, [False]), (50, [True])], one
    assert verdicts(one)[-1][1] == [(True, [[8.0, "Look, a blue ring popped in!"]])]
    assert verdicts(two) == verdicts(one)  # what was said, too; rank 0 alone wrote them, once a round
    starts = [e for e in two if e["event"] == "start" and e["stage"] == "feedback"]
    assert [e["processes"] for e in starts] == [2, 2]  # the first attempt and torchrun's restart
    assert [e["event"] for e in two].count("precheck") == 1  # the launcher's, before any worker started
    assert any(e["event"] == "error" and e["kind"] == "peer" for e in two)  # rank 0 saw rank 1 die
    for out in (one_out, two_out):
        assert "1 of 1 corrections learned" in out and "✓ learned" in out, out
    for name in ("one", "two"):
        report = json.loads((data / "train" / name / "feedback_report.json").read_text())
        assert report["learned"] and [r["step"] for r in report["rounds"]] == [25, 50]
        assert not report["base_verdicts"][0]["ok"]
    delta = _max_delta(data / "train" / "one" / "sft" / "final", data / "train" / "two" / "sft" / "final")
    assert delta <= TOL, f"2 processes moved the weights by {delta} from 1 process"


def test_nothing_to_learn_is_refused_by_the_launcher_before_any_process_starts(marked_session, bundled_demo_hf):
    data, _, plain = marked_session
    out, events = _feedback(data, bundled_demo_hf, "refused", ["--sessions", plain, *FEEDBACK], gpus=2, code=2)
    assert "no marks: there is nothing to learn" in out and "duet sessions feedback" in out, out
    assert [e["event"] for e in events] == ["error"]
    job = data / "train" / "refused"
    assert not (job / distributed.EXIT_FILE).exists()  # no torchrun worker ran: rank 0 would have written it
    assert not (job / "sft").exists()


def test_the_launcher_runs_torchrun_and_strips_its_own_flags():
    argv = distributed.strip_gpus(["sft", "r.toml", "--gpus", "2", "--set", "x=1", "--max-restarts=3"])
    assert argv == ["sft", "r.toml", "--set", "x=1"]
    cmd = distributed.torchrun_command(2, argv, max_restarts=1)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[-6:] == ["-m", "app.trainer.cli", *argv]


def test_shard_is_a_deterministic_split_and_devices_list_the_cpu():
    ctx = distributed.DistContext(rank=1, world=2)
    assert ctx.shard([5, 6, 7, 8]) == [6, 8]
    assert distributed.DistContext(rank=0, world=2).shard([5, 6, 7, 8]) == [5, 7]
    devices = distributed.available_devices()
    assert devices[0] == {"kind": "cpu", "name": "CPU", "gpus": 0}
    from app.trainer.jobs import gpus_args

    assert gpus_args(1) == [] and gpus_args(4) == ["--gpus", "4"]


def test_the_fsdp_switch_is_checked(tmp_path):
    from app.trainer.config import ConfigError, load_config

    assert load_config(REPO / "models/recipes/demo.toml").sft.fsdp == "auto"
    for sets, words in (({"sft.fsdp": "yes"}, "auto, on or off"), ({"sft.fsdp": "on", "sft.lora": True}, "LoRA")):
        with pytest.raises(ConfigError, match=words):
            load_config(REPO / "models/recipes/demo.toml", sets)  # check() refuses it
    assert distributed.DistContext(rank=0, world=1).wrap(obj := object(), lora=False) is obj  # one process: as is
