"""End to end on the CPU, through the real commands: a clip narrated by the demo model and saved,
a correction given with `duet sessions feedback`, `duet train feedback`, and the new model says the
corrected words at that moment of the same clip while keeping its held-out PAUC (no forgetting)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.modelhub.library import ModelLibrary

REPO = Path(__file__).resolve().parents[2]
QUESTION = "Tell me when a new shape appears."
CORRECTION = "A red square appeared."  # what the clip shows at 6–8 s; the demo model stays silent there


def duet(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    p = subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"duet {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def replies(stdout: str) -> dict[str, str]:
    return {m[0]: m[1] for m in re.findall(r"^\[(\d\d:\d\d)\] (?!\(you\))(.+)$", stdout, re.M)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from app.eval.synthetic import SyntheticConfig, make_synthetic

    out = tmp_path_factory.mktemp("clips")
    make_synthetic(out, SyntheticConfig(families=("appear",), difficulties=("easy",), per_family=1, seed=7))
    return out / "videos" / "appear-easy-000.avi"


def test_a_correction_is_learned_at_its_moment_without_forgetting(demo_model, clip: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    ModelLibrary(tmp_path / "data" / "models").add("demo", *demo_model, source="demo")
    watch = ["run", "--source", str(clip), "--fast", "--tokens-per-frame", "16", "--max-new-tokens", "24",
             "--ask", QUESTION]

    out = duet(env, *watch, "--model", "demo", "--save-session")
    before = replies(out)
    assert CORRECTION not in before.values(), f"the demo already says it: {before}"
    sid = re.search(r"^session (\S+)$", out, re.M).group(1)

    marked = duet(env, "sessions", "feedback", sid, "--at", "8", "--kind", "missed", "--correction", CORRECTION)
    assert "should have said something" in marked
    shown = duet(env, "sessions", "show", sid)
    assert f"Missed** _(should have said: “{CORRECTION}”)_" in shown

    duet(env, "train", "feedback", "--base", "demo", "--name", "fixed", "--sessions", sid, "--steps", "30", "--quiet")
    summary = json.loads((tmp_path / "data" / "train" / "fixed" / "summary.json").read_text())
    entry = ModelLibrary(tmp_path / "data" / "models").get("fixed")
    assert entry is not None and entry.source == "trained"

    after = replies(duet(env, *watch, "--model", "fixed"))
    assert after.get("00:08") == CORRECTION, f"before {before}, after {after}"
    assert {t: r for t, r in after.items() if t != "00:08"} == {t: r for t, r in before.items() if t != "00:08"}
    # held-out clips of the demo's own held-out set, never in the session or the replay:
    # one reply of 22 gold turns moves PAUC by ≈ 0.02; allow two (measured: 0.351 → 0.342 and, on a demo
    # retrained after the merge, 0.402 → 0.372 — recipe of feedback_job.build_recipe)
    assert summary["pauc_after"] >= summary["pauc_before"] - 0.05, summary


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "x", "--all"], "--base and --name are required"),
    (["--base", "{hf}", "--name", "x"], "nothing to train on"),
    (["--base", "{hf}", "--name", "x", "--all"], "no sessions with feedback"),
    (["--base", "{hf}", "--name", "x", "--sessions", "nope"], "no saved session 'nope'"),
    (["--base", "{hf}", "--name", "bad name", "--synthetic"], "--name 'bad name'"),
    (["--base", "/nowhere", "--name", "x", "--synthetic"], "not an HF checkpoint folder"),
    (["--base", "{hf}", "--name", "x", "--all", "--sessions", "a"], "not both"),
])
def test_bad_requests_fail_fast_with_advice(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    from app.cli import main

    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path))
    assert main(["train", "feedback", *[a.format(hf=tiny_model.hf_dir) for a in args]]) == 2
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["event"] == "error" and message in event["message"], event
    assert not (tmp_path / "train").exists()
