"""The offline demo model: the tiny Qwen2.5-VL taken from silent to useful by this trainer.

``duet train demo`` = SFT → export on the synthetic proactive videos of ``models/recipes/demo.toml``,
registered in the library as ``demo`` (source ``demo``); ``--with-grpo`` adds the recipe's GRPO stage
between them and exports its model. GRPO is off by default because on the demo it does not raise
held-out PAUC over SFT alone (measured over 3 seeds: docs/training-estimates.md, "GRPO"); it helps
only where SFT left the timing wrong (replies labelled late), which the demo's SFT does not.
Every stage resumes from its checkpoints, so a rerun after an interruption continues where it
stopped, and ``--if-missing`` makes the README's main job a no-op once the model exists. The numbers
the closing note quotes (loss curve, held-out PAUC before/after each stage that ran, reward per GRPO
step, engine parity) are collected into ``<out_dir>/demo_summary.json``.

A finished run is reused only if it was made by the same recipe *and* the same code: the key (the
SFT and GRPO recipe hashes plus :func:`app.core.codekey.code_key` of the training stages) is kept
in ``<out_dir>/demo_key.json``. A run made by other code or another recipe (an older Duet, a cache
left by an earlier checkout) is discarded with a note and trained again, instead of resuming
checkpoints that no longer match or stopping with "different recipe".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from app.core.atomic import write_json_atomic
from app.trainer.config import DEFAULT_DEMO_RECIPE, TrainConfig
from app.trainer.jobs import Reporter, StopFlag


def demo_registered(name: str, library_root: Path | None = None) -> bool:
    from app.modelhub.library import ModelLibrary

    # Only the user's own library counts: the demo model bundled with the app (source "builtin") is
    # what this trainer makes, but `--if-missing` is about the user's copy.
    e = next((e for e in ModelLibrary(library_root).user_entries() if e.name == name), None)
    return e is not None and e.model.is_file() and e.mmproj.is_file()


KEY_FILE = "demo_key.json"
_STAGE_DIRS = ("sft", "grpo", "data")  # what a stale run leaves that a new one must not reuse


def demo_key(cfg: TrainConfig) -> dict[str, str]:
    """What a cached demo run's validity depends on: the stages' recipe hashes and their code."""
    from app.core.codekey import code_key
    from app.trainer.loop import recipe_hash

    return {"code": code_key("app.trainer.sft", "app.trainer.grpo"), "sft": recipe_hash(cfg, "sft"),
            "grpo": recipe_hash(cfg, "grpo")}


def _bundled_recipe(cfg: TrainConfig) -> bool:
    return bool(cfg.path) and Path(cfg.path).resolve() == DEFAULT_DEMO_RECIPE.resolve()


def discard_stale_run(cfg: TrainConfig, reporter: Reporter) -> bool:
    """Delete the stages of a demo run made by other code or another recipe; True if one was deleted.

    Only a folder the demo made is touched: one holding a demo key or summary, or the bundled
    recipe's own ``out_dir``. Someone else's SFT run named as a demo ``out_dir`` is left alone (its
    stages then refuse a different recipe with their own advice).
    """
    key = demo_key(cfg)
    key_path = cfg.out / KEY_FILE
    try:
        old = json.loads(key_path.read_text()) if key_path.is_file() else None
    except (OSError, ValueError):
        old = {}  # unreadable: treat as made by other code
    ours = old is not None or (cfg.out / "demo_summary.json").is_file() or _bundled_recipe(cfg)
    made = [cfg.out / d for d in _STAGE_DIRS if (cfg.out / d).exists()]
    if not ours:
        return False
    stale = bool(made) and old != key
    if stale:
        why = "no key (made by an older Duet)" if not old else ", ".join(
            f"{k} changed" for k in key if old.get(k) != key[k])
        reporter.emit("note", stage="demo", message=f"the demo run cached in {cfg.out} was made by other code or "
                      f"another recipe ({why}): training it again from scratch")
        for d in made:
            shutil.rmtree(d)
        (cfg.out / "demo_summary.json").unlink(missing_ok=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(key_path, key)
    return stale


def summarise(cfg: TrainConfig, parity: dict[str, Any] | None = None, *, with_grpo: bool = True) -> dict[str, Any]:
    """The closing note's numbers; a GRPO stage left on disk by an earlier ``--with-grpo`` run is not reported
    when this run did not use it (its model is not the one exported)."""
    out: dict[str, Any] = {"recipe": cfg.path, "stages": ["sft", "grpo"] if with_grpo else ["sft"]}
    for stage in out["stages"]:
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
             library_root: Path | None = None, with_grpo: bool = False) -> Any:
    """SFT (then GRPO when ``with_grpo``) → export of that stage's model → library entry ``demo``."""
    from app.trainer.export import run_export
    from app.trainer.sft import run_sft

    cfg.export.name, cfg.export.source = "demo", "demo"
    cfg.export.stage = "grpo" if with_grpo else "sft"
    if if_missing and demo_registered("demo", library_root):
        reporter.emit("done", stage="demo", message="the demo model is already in the library", skipped=True)
        return None
    discard_stale_run(cfg, reporter)
    run_sft(cfg, reporter, stop)
    if with_grpo:
        from app.trainer.grpo import run_grpo

        run_grpo(cfg, reporter, stop)
    else:
        reporter.emit("note", stage="demo", message="GRPO skipped: on the demo it does not raise held-out PAUC over "
                      "SFT (docs/training-estimates.md); `duet train demo --with-grpo` runs it")
    entry = run_export(cfg, reporter, parity=True, library_root=library_root)
    parity = next((e for e in reversed(reporter.events) if e["event"] == "parity"), None)
    summary = summarise(cfg, {k: v for k, v in (parity or {}).items() if k not in ("event", "time")},
                        with_grpo=with_grpo)
    (cfg.out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    reporter.emit("done", stage="demo", name=entry.name, model=str(entry.model), summary=str(cfg.out / "demo_summary.json"))
    return entry
