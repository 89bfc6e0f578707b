"""The body of ``duet train feedback`` on marked sessions: refuse when there is nothing to learn, train in rounds
until every correction is said by the exported model (or the budget is spent), then check nothing else changed.

1. **Nothing to learn, nothing run.** Sessions without marks are refused; so are marks the base model already
   satisfies, checked by playing each session with the base's GGUF through the real engine
   (:mod:`app.trainer.feedback_check`).
2. **Rounds.** SFT for ``sft.steps`` steps, export to GGUF, play each marked session with it; while a correction
   is not said in its window and the budget (``budget.max_steps``, ``budget.max_minutes``) allows another
   round, train ``sft.steps`` more (resuming from the checkpoint: the learning rate is constant after warm-up,
   so rounds add up to one run). Each round's verdicts are an event; the last ones go to the report.
3. **Nothing else is forgotten.** Base and new GGUF on the held-out clips (:mod:`app.trainer.feedback_forget`).

``<out>/feedback_report.json`` holds the verdicts, the rounds, the time and the held-out comparison.

With ``--gpus N`` (torchrun, app/trainer/distributed.py) the launcher runs step 1 in its own single process before
any worker starts (a refusal costs no N processes) and leaves the base's verdicts in ``<out>/precheck.json``,
which rank 0 reads back for the report. Every rank trains each round; rank 0 alone exports, plays the sessions
and decides (another round up to step S, or stop), and the others wait for that decision
(:meth:`~app.trainer.distributed.DistContext.decide`); only rank 0 emits verdicts, registers the model, runs
step 3 and writes the report. The rounds done so far are kept in ``<out>/rounds.json``, so a job restarted by
torchrun after a rank died (or run again after a cancel) goes on from the checkpoint with the rounds, steps and
minutes already spent, instead of verifying again a round it already verified.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from app.trainer.config import TrainConfig
from app.trainer.jobs import JobError, Reporter, StopFlag

HOW_TO_MARK = ("mark replies while watching (the buttons under each reply; ✎ to type a correction) or in the "
               "Sessions tab, or from a terminal: `duet sessions feedback ID --at SECONDS --kind "
               "wrong|missed|late --correction TEXT`; then start again")
REPORT = "feedback_report.json"
PRECHECK = "precheck.json"  # the base model's verdicts, so that neither a resume nor a torchrun worker replays them
ROUNDS = "rounds.json"  # the rounds verified so far (a restarted job goes on from them)


def base_pair(cfg: TrainConfig) -> tuple[Path, Path]:
    """The base model as a GGUF pair, made once into ``<out>/base-gguf`` with the export's own settings (so the
    base is judged as the model the user runs, quantization included)."""
    from app.trainer.export import export_model

    folder = cfg.out / "base-gguf"
    mmproj = sorted(folder.glob("mmproj-*.gguf"))
    model = sorted(p for p in folder.glob("*.gguf") if not p.name.startswith("mmproj-"))
    if mmproj and model:
        return model[0], mmproj[0]
    return export_model(Path(cfg.model.base), folder, "base", cfg.export.outtype, cfg.export.quant)


def precheck(cfg: TrainConfig, reporter: Reporter) -> list[dict[str, Any]]:
    """Refuse (JobError, exit 2) a run with no marks, or whose marks the base already satisfies.

    Returns the base's verdicts (JSON), also written to ``<out>/precheck.json`` when the run may go on; a later
    call for the same base and marks (a resumed job, or rank 0 of the torchrun job the launcher checked for)
    reads them back instead of playing the sessions again.
    """
    from app.core.sessions import load_session
    from app.trainer.feedback_check import summary_line, verify

    sessions = [Path(d) for d in cfg.data.sessions]
    if not any(load_session(d).marks for d in sessions):
        raise JobError("nothing-to-learn", "the sessions given carry no marks: there is nothing to learn",
                       HOW_TO_MARK, code=2)
    saved = _read(cfg.out / PRECHECK)
    if saved.get("key") == _precheck_key(cfg):
        return list(saved["verdicts"])
    model, mmproj = base_pair(cfg)
    verdicts = verify(model, mmproj, sessions, cfg.threads)
    reporter.emit("precheck", stage="feedback", summary=summary_line(verdicts),
                  verdicts=[v.to_json() for v in verdicts])
    if all(v.ok for v in verdicts):
        raise JobError("nothing-to-learn", "the base model already does what every mark asks "
                       f"({summary_line(verdicts) if verdicts else 'no mark names a reply or moment it can be checked at'}): "
                       "there is nothing to learn", HOW_TO_MARK, code=2)
    from app.core.atomic import write_json_atomic

    out = [v.to_json() for v in verdicts]
    write_json_atomic(cfg.out / PRECHECK, {"key": _precheck_key(cfg), "verdicts": out})
    return out


def _precheck_key(cfg: TrainConfig) -> dict[str, Any]:
    """What the base's verdicts depend on: the base, the sessions and their marks, the exported quantization."""
    return {"base": cfg.model.base, "sessions": list(cfg.data.sessions), "marks": cfg.data.sessions_digest,
            "quant": cfg.export.quant, "outtype": cfg.export.outtype}


def _read(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def train_until_learned(cfg: TrainConfig, raw: dict[str, Any], reporter: Reporter,
                        stop: StopFlag | None) -> tuple[tuple[Path, Path], list[Any], dict[str, Any]]:
    """Rounds of SFT → export → verify (module docstring); returns (GGUF pair, last verdicts, rounds info).

    Every rank of a torchrun job runs this; the export, the verdicts and the decision are rank 0's (the other
    ranks return ``(None, [], {})``).
    """
    from app.core.atomic import write_json_atomic
    from app.trainer.distributed import STOP, context
    from app.trainer.export import export_model
    from app.trainer.feedback_check import summary_line, verify
    from app.trainer.jobs import Cancelled
    from app.trainer.loop import recipe_hash
    from app.trainer.sft import run_sft

    ctx = context()
    budget = raw.get("budget") or {}
    round_steps = int(budget.get("round_steps", cfg.sft.steps))
    max_steps = max(int(budget.get("max_steps", cfg.sft.steps)), cfg.sft.steps)
    max_s = float(budget.get("max_minutes", 0.0)) * 60
    key = recipe_hash(cfg, "sft")
    saved = _read(cfg.out / ROUNDS)
    rounds: list[dict[str, Any]] = list(saved.get("rounds", [])) if saved.get("recipe") == key else []
    spent = rounds[-1]["seconds"] if rounds else 0.0  # minutes spent before a restart count against the budget
    t0 = time.monotonic() - spent
    # after a restart: the step the last verified round ended on, plus a round when it did not learn everything
    target = cfg.sft.steps
    if rounds:
        last = rounds[-1]
        target = max(target, min(max_steps, last["step"] + (0 if last["ok"] == last["checks"] else round_steps)))
    result: dict[str, Any] = {}

    def after_round() -> int:
        """Rank 0: export, play every marked session, record the round; the next target step, or STOP."""
        done = int(json.loads((cfg.out / "sft" / "summary.json").read_text())["step"])
        pair = export_model(final, cfg.out / "export", cfg.export.name, cfg.export.outtype, cfg.export.quant)
        verdicts = verify(*pair, [Path(d) for d in cfg.data.sessions], cfg.threads)
        elapsed = time.monotonic() - t0
        rounds.append({"step": done, "seconds": round(elapsed, 1), "ok": sum(v.ok for v in verdicts),
                       "checks": len(verdicts)})
        write_json_atomic(cfg.out / ROUNDS, {"recipe": key, "rounds": rounds})
        result.update(pair=pair, verdicts=verdicts, done=done)
        reporter.emit("verdicts", stage="feedback", step=done, max_steps=max_steps, summary=summary_line(verdicts),
                      verdicts=[v.to_json() for v in verdicts])
        if all(v.ok for v in verdicts):
            return STOP
        per_round = elapsed / len(rounds)
        if done >= max_steps or (max_s and elapsed + per_round > max_s):
            reporter.emit("warning", stage="feedback", message=f"budget spent ({done} of {max_steps} steps, "
                          f"{elapsed / 60:.1f} min) before every mark was learned: {summary_line(verdicts)}")
            return STOP
        if stop:  # asked to stop while the sessions played: the round's checkpoint is the resume point
            raise Cancelled()
        return min(max_steps, done + round_steps)

    while True:
        cfg.sft.steps = target
        final = run_sft(cfg, reporter, stop)  # every rank (DDP); it ends with a barrier once sft/final is written
        target = ctx.decide(after_round)
        if target == STOP:
            break
    if not ctx.is_main:
        return None, [], {}  # type: ignore[return-value]
    return result["pair"], result["verdicts"], {
        "rounds": rounds, "steps": result["done"], "seconds": round(time.monotonic() - t0, 1),
        "budget": {"round_steps": round_steps, "max_steps": max_steps, "max_minutes": max_s / 60 or None}}


def run_sessions_job(cfg: TrainConfig, raw: dict[str, Any], reporter: Reporter, stop: StopFlag | None, *,
                     parity: bool = False, library_root: Path | None = None) -> Any:
    """Precheck → rounds → register → forgetting check → report; returns (library entry, report).

    Under torchrun every rank trains the rounds; the others return ``(None, {})`` once rank 0 decides to stop.
    """
    from app.trainer.distributed import STOP, context
    from app.trainer.export import register, run_export
    from app.trainer.feedback_check import summary_line
    from app.trainer.feedback_forget import check_forgetting

    ctx = context()
    t0 = time.monotonic()
    before: list[dict[str, Any]] = []

    def check_base() -> int:  # rank 0 (the launcher has already done it: read back from precheck.json)
        before.extend(precheck(cfg, reporter))
        return STOP

    ctx.decide(check_base)
    pair, verdicts, info = train_until_learned(cfg, raw, reporter, stop)
    if not ctx.is_main:
        return None, {}
    if parity:
        entry = run_export(cfg, reporter, parity=True, library_root=library_root)
    else:
        entry = register(cfg.export.name, *pair, cfg.export.source, notes=f"trained by duet train from {cfg.path}",
                         library_root=library_root)
    if cfg.data.heldout_synthetic is not None or cfg.data.heldout_files:
        reporter.emit("check", stage="feedback", message="playing the held-out clips with the base and the new model")
    forgetting = check_forgetting(cfg, base_pair(cfg), pair)
    report = {"summary": summary_line(verdicts), "learned": all(v.ok for v in verdicts),
              "verdicts": [v.to_json() for v in verdicts], "base_verdicts": before,
              **info, "total_seconds": round(time.monotonic() - t0, 1), "forgetting": forgetting}
    (cfg.out / REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return entry, report
