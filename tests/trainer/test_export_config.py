"""`duet train export-config --engine verl|trl`: the reward file scores like Duet's reward, the data round-trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.protocol import NO_REPLY
from app.eval.judges import ExactMatchJudge
from app.trainer.cli import run_action
from app.trainer.config import load_config
from app.trainer.reward import EvalJudgeReward, GoldSpan, pauc_reward

REPO = Path(__file__).resolve().parents[2]
SETS = {"data.train_synthetic.per_family": 1, "data.train_synthetic.families": ["appear", "count"],
        "data.heldout_synthetic.per_family": 1, "data.heldout_synthetic.families": ["colour"]}
GOLD = [GoldSpan("A red circle appeared.", "q", (2.5, 5.5)), GoldSpan("A blue square appeared.", "q", (6.0, 9.0))]
TIMES = [2.0, 4.0, 6.0, 8.0]
CASES = [
    [NO_REPLY] * 4,
    [NO_REPLY, "A red circle appeared.", NO_REPLY, NO_REPLY],
    ["Hello.", "A red circle appeared.", "A red circle appeared.", "A blue square appeared."],
]


def _export(engine: str, out: Path, work: Path) -> list[dict]:
    lines: list[str] = []

    class Sink:
        def write(self, s: str) -> None:
            lines.append(s)

        def flush(self) -> None:
            pass

    code = run_action("export-config", "models/recipes/demo.toml", {**SETS, "out_dir": str(work)}, stream=Sink(),
                      engine=engine, out_dir=str(out))
    events = [json.loads(x) for x in "".join(lines).splitlines()]
    assert code == 0, events
    return events


@pytest.fixture(scope="module", params=["verl", "trl"])
def exported(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    out = tmp_path_factory.mktemp(request.param)
    events = _export(request.param, out, work)
    return request.param, out, work, events


def _score_in_bare_python(folder: Path, engine: str, replies: list[str]) -> float:
    """Import the written file in an isolated interpreter (no Duet on the path) and score one stream."""
    gt = json.dumps([{"content": g.content, "question": g.question, "span": list(g.span)} for g in GOLD])
    if engine == "verl":  # verl hands over the decoded multi-turn rollout text
        text = "\nuser\n\nassistant\n".join(replies)
        call = f"m.compute_score('duet', {text!r}, {gt!r}, {{'turn_times': {TIMES!r}}})"
    else:  # trl: a conversation's assistant messages
        msgs = [{"role": "assistant", "content": r} for r in replies]
        call = f"m.stream_reward([{msgs!r}], [{gt!r}], [{TIMES!r}])[0]"
    code = f"import sys; sys.path.insert(0, {str(folder)!r}); import duet_pauc_reward as m; print(repr({call}))"
    r = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


def test_the_reward_file_scores_as_duets_reward(exported):
    engine, out, _, _ = exported
    judge = EvalJudgeReward(ExactMatchJudge())
    for replies in CASES:
        want = pauc_reward(TIMES, replies, GOLD, judge).total
        assert _score_in_bare_python(out, engine, replies) == pytest.approx(want, abs=1e-12), replies
    # by hand (test_reward's case): the first span 9.375 / 12, the second without a reply 0.5 / 4; weight 3
    assert _score_in_bare_python(out, engine, CASES[1]) == pytest.approx(3 * (9.375 / 12 + 0.125) / 2)


def test_the_data_round_trip(exported):
    from app.trainer.data import load_sources
    from app.trainer.export_config import load_exported
    from app.trainer.reward import gold_spans
    from app.trainer.rollout import stream_dialogue

    engine, out, work, events = exported
    cfg = load_config(REPO / "models/recipes/demo.toml", {**SETS, "out_dir": str(work)})
    src = load_sources(cfg, cfg.out / "data")
    back = load_exported(out)
    assert [c["id"] for c in back["train"]] == [ex.id for ex in src.train]
    assert [c["id"] for c in back["val"]] == [ex.id for ex in src.heldout]
    for ex, clip in zip([*src.train, *src.heldout], [*back["train"], *back["val"]], strict=True):
        dlg = stream_dialogue(ex, src.frames[ex.id])
        assert [t["time"] for t in clip["turns"]] == [t.time for t in dlg.turns]
        assert [t["text"] for t in clip["turns"]] == [t.user_text for t in dlg.turns]
        for t, turn in zip(clip["turns"], dlg.turns, strict=True):
            assert len(t["images"]) == len(turn.images)
            assert all(np.array_equal(a, b) for a, b in zip(t["images"], turn.images, strict=True))  # PNG is lossless
        assert [(g["content"], g["question"], tuple(g["span"])) for g in clip["gold"]] == \
               [(g.content, g.question, g.span) for g in gold_spans(ex)]
    done = events[-1]
    assert done["event"] == "done" and done["clips"] == len(src.train) and done["heldout"] == len(src.heldout)


def test_the_engine_files(exported):
    engine, out, _, _ = exported
    recipe = json.loads((out / "duet_recipe.json").read_text())
    if engine == "verl":
        script = (out / "run_verl.sh").read_text()
        assert "verl.trainer.main_ppo" in script and "algorithm.adv_estimator=grpo" in script
        assert f"actor_rollout_ref.rollout.n={recipe['grpo']['group']}" in script
        assert f"reward.custom_reward_function.path={out.resolve() / 'duet_pauc_reward.py'}" in script
        row = json.loads((out / "train.json").read_text().splitlines()[0])
        assert row["prompt"][1]["content"].count("<image>") == len(row["images"])
    else:
        script = (out / "train_trl.py").read_text()
        compile(script, "train_trl.py", "exec")  # trl is not installed here: at least it is valid Python
        assert f"num_generations={recipe['grpo']['group']}" in script and "reward_funcs=[stream_reward]" in script
        row = json.loads((out / "train.jsonl").read_text().splitlines()[0])
        assert sum(p["type"] == "image" for p in row["prompt"][1]["content"]) == len(row["images"])


def test_an_llm_judge_or_an_unknown_engine_is_refused(tmp_path):
    lines: list[str] = []

    class Sink:
        def write(self, s: str) -> None:
            lines.append(s)

        def flush(self) -> None:
            pass

    code = run_action("export-config", None, {**SETS, "out_dir": str(tmp_path), "grpo.judge": "llm"}, stream=Sink(),
                      engine="verl", out_dir=str(tmp_path / "x"))
    ev = json.loads(lines[-1])
    assert code == 2 and ev["kind"] == "config" and "grpo.judge" in ev["message"] and "overlap" in ev["advice"]
    code = run_action("export-config", None, {**SETS, "out_dir": str(tmp_path)}, stream=Sink(), engine="nemo",
                      out_dir=str(tmp_path / "y"))
    assert code == 2 and "verl or trl" in json.loads(lines[-1])["message"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
