"""The offline demo model: the tiny Qwen2.5-VL taken from silent to useful by this trainer.

``duet train demo`` = SFT → GRPO → export on the synthetic proactive videos of
``models/recipes/demo.toml``, registered in the library as ``demo`` (source ``demo``). Every stage
resumes from its checkpoints, so a rerun after an interruption continues where it stopped, and
``--if-missing`` makes the README's main job a no-op once the model exists. The numbers the
closing note quotes (loss curve, held-out PAUC before/after each stage, reward per GRPO step,
engine parity) are collected into ``<out_dir>/demo_summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.trainer.config import TrainConfig
from app.trainer.jobs import Reporter, StopFlag


def demo_registered(name: str, library_root: Path | None = None) -> bool:
    from app.modelhub.library import ModelLibrary

    # Only the user's own library counts: the demo model bundled with the app (source "builtin") is
    # what this trainer makes, but `--if-missing` is about the user's copy.
    e = next((e for e in ModelLibrary(library_root).user_entries() if e.name == name), None)
    return e is not None and e.model.is_file() and e.mmproj.is_file()


def summarise(cfg: TrainConfig, parity: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"recipe": cfg.path}
    for stage in ("sft", "grpo"):
        p = cfg.out / stage / "summary.json"
        if p.is_file():
            s = json.loads(p.read_text())
            out[stage] = {k: s[k] for k in ("losses", "rewards") if k in s}
            out[stage]["evals"] = [{k: e.get(k) for k in ("step", "pauc", "pauc_w0", "pauc_w1", "replies",
                                                          "out_of_span_replies", "turns_without_reply", "tf", "tf_shuffled")
                                                          if k in e}
                                   for e in s.get("evals", [])]
    if parity is not None:
        out["parity"] = parity
    return out


def run_demo(cfg: TrainConfig, reporter: Reporter, stop: StopFlag | None = None, *, if_missing: bool = False,
             library_root: Path | None = None) -> Any:
    from app.trainer.export import run_export
    from app.trainer.grpo import run_grpo
    from app.trainer.sft import run_sft

    cfg.export.name, cfg.export.source = "demo", "demo"
    if if_missing and demo_registered("demo", library_root):
        reporter.emit("done", stage="demo", message="the demo model is already in the library", skipped=True)
        return None
    run_sft(cfg, reporter, stop)
    run_grpo(cfg, reporter, stop)
    entry = run_export(cfg, reporter, parity=True, library_root=library_root)
    parity = next((e for e in reversed(reporter.events) if e["event"] == "parity"), None)
    summary = summarise(cfg, {k: v for k, v in (parity or {}).items() if k not in ("event", "time")})
    (cfg.out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    reporter.emit("done", stage="demo", name=entry.name, model=str(entry.model), summary=str(cfg.out / "demo_summary.json"))
    return entry
