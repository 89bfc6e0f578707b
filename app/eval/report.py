"""Report files of an evaluation: per-turn scores, JSON + Markdown summary, a PNG timeline per example.

The timeline is the picture one needs to see *why* a PAUC is what it is: gold reply spans (the
related part darker) against the times the model spoke, each reply coloured by its judged score
(red 0, orange 1, green 2; grey outside every span; hollow when post-processing dropped it or the
judge failed), with the question markers on the axis. Drawn with Pillow (no plotting dependency).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from app.core.atomic import write_json_atomic, write_text_atomic
from app.eval.dataset import Example
from app.eval.pauc import HEADLINE_OMEGA, OMEGAS, in_span
from app.eval.predictions import Prediction
from app.eval.scoring import TurnScore

if TYPE_CHECKING:
    from app.eval.results import EvalResult, RunSettings

SCORE_COLOURS = {0: (214, 48, 49), 1: (240, 150, 30), 2: (46, 160, 67)}
OUTSIDE = (150, 150, 150)
MAX_LISTED_FAILURES = 50


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}"


def safe_name(example_id: str) -> str:
    """A file name for an example id (ids such as TV's ``clip.mp4%Q1`` hold odd characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", example_id).strip("._") or "example"


# ---------------------------------------------------------------------------------------------
# timeline


def draw_timeline(ex: Example, pred: Prediction | None, turns: list[TurnScore], path: Path,
                  width: int = 960) -> Path:
    """Gold spans against reply times for one example, saved as PNG."""
    font = ImageFont.load_default()
    replies = sorted(pred.replies) if pred else []
    end = max([ex.duration or 0.0] + [a.reply_span[1] for a in ex.answers] + [t for t, _ in replies] + [1.0])
    left, right, top = 70, 20, 34
    row_h = 26
    n_rows = 2
    height = top + n_rows * row_h + 52
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)

    def x(t: float) -> int:
        return int(left + (width - left - right) * t / end)

    mean = sum(t.pauc[HEADLINE_OMEGA] for t in turns) / len(turns) if turns else None
    title = f"{ex.id}  |  {len(ex.answers)} gold turn(s), {len(replies)} repl(ies)"
    if mean is not None:
        title += f"  |  PAUC(w=0.5) mean {mean * 100:.1f}"
    d.text((8, 8), title, fill=(0, 0, 0), font=font)
    gold_y, model_y = top, top + row_h
    d.text((8, gold_y + 7), "gold", fill=(0, 0, 0), font=font)
    d.text((8, model_y + 7), "model", fill=(0, 0, 0), font=font)
    for i, a in enumerate(ex.answers):
        s, e = a.reply_span
        d.rectangle([x(s), gold_y + 4, max(x(e), x(s) + 1), gold_y + row_h - 4], fill=(190, 215, 245),
                    outline=(60, 110, 180))
        if a.related_span:
            rs, re_ = a.related_span
            d.rectangle([x(rs), gold_y + 8, max(x(re_), x(rs) + 1), gold_y + row_h - 8], fill=(90, 140, 210))
        d.text((x(s) + 2, gold_y + 7), str(i + 1), fill=(0, 0, 0), font=font)
    by_time: dict[float, tuple[int | None, bool]] = {}
    for t in turns:
        for p in t.points:
            by_time[p.time] = (p.score, p.kept)
    for tm, _text in replies:
        score, kept = by_time.get(tm, (None, False))
        inside = any(in_span(tm, a.reply_span) for a in ex.answers)
        colour = SCORE_COLOURS.get(score, OUTSIDE) if inside and score is not None else OUTSIDE
        cx, cy = x(tm), model_y + row_h // 2
        box = [cx - 5, cy - 5, cx + 5, cy + 5]
        if inside and not kept:
            d.ellipse(box, outline=colour, width=2)
        else:
            d.ellipse(box, fill=colour)
    axis_y = top + n_rows * row_h + 6
    d.line([x(0), axis_y, x(end), axis_y], fill=(0, 0, 0))
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if end / s <= 12)
    k = 0
    while k * step <= end + 1e-9:
        t = k * step
        d.line([x(t), axis_y, x(t), axis_y + 4], fill=(0, 0, 0))
        d.text((x(t) - 6, axis_y + 6), f"{t:g}", fill=(0, 0, 0), font=font)
        k += 1
    for q in ex.questions:
        qx = x(q.time)
        d.polygon([(qx, axis_y - 1), (qx - 4, axis_y - 8), (qx + 4, axis_y - 8)], fill=(60, 60, 200))
    d.text((left, axis_y + 22), "seconds; triangles: questions; dots: replies coloured by score "
           "(red 0, orange 1, green 2, grey outside spans; hollow: dropped/unjudged)", fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------------------
# JSON + Markdown


def _markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Duet evaluation report",
        "",
        f"- dataset: `{report['dataset']}` ({s['n_examples']} examples, {s['n_turns']} gold turns)",
        f"- model: `{report['settings'].get('model') or '(not run here)'}`; interval {report['settings']['interval']} s, "
        f"{report['settings']['frames_per_turn']} frame(s) per turn",
        f"- judge: `{report['judge']['id']}` ({report['judge']['judged']} judged now, "
        f"{report['judge']['cached']} from cache, {report['judge']['failed']} failed)",
        "",
    ]
    failed = report["judge"]["failed"]
    if failed:
        lines += [f"> **Incomplete:** {failed} judge request(s) failed (listed under Problems). Their points are "
                  "left out, so a turn with no verdict counts as silent and the duplicate share ignores them: "
                  "these numbers are not final. Rerun to retry; verdicts already obtained are cached.", ""]
    lines += ["| metric | value |", "|---|---|"]
    for w in OMEGAS:
        tag = " (headline)" if w == HEADLINE_OMEGA else ""
        lines.append(f"| PAUC ω={w:g}{tag} | {_pct(s['pauc'][str(w)])} |")
    dp = s["duplicate_proportion"]
    rpe = "–" if s["replies_per_example"] is None else f"{s['replies_per_example']:.2f}"
    lines += [
        f"| reply duplicate proportion (%) | {_pct(dp)} ({s['duplicates']}/{s['dup_candidates']}) |",
        f"| replies per example | {rpe} |",
        f"| replies outside every span | {s['out_of_span_replies']} of {s['replies']} |",
        f"| gold turns without a scored reply | {s['n_turns_no_reply']} of {s['n_turns']} |",
        "",
    ]
    if s["by_task"]:
        lines += ["## By task", "", "| task | turns | PAUC ω=0 | ω=0.5 | ω=1 | duplicates (%) |", "|---|---|---|---|---|---|"]
        for task, t in s["by_task"].items():
            p = t["pauc"]
            lines.append(f"| {task} | {t['n_turns']} | {_pct(p['0.0'])} | {_pct(p['0.5'])} | {_pct(p['1.0'])} | "
                         f"{_pct(t['duplicate_proportion'])} |")
        lines.append("")
    problems = []
    if report["skipped"]:
        problems += [f"- skipped `{k}`: {v}" for k, v in report["skipped"].items()]
    problems += [f"- `{k}` stopped early: {v}" for k, v in s["examples_with_errors"].items()]
    problems += [f"- `{k}`: no prediction (scored as silent)" for k in s["examples_without_prediction"]]
    problems += [f"- judge failure: {f}" for f in report["judge"]["failures"]]
    if problems:
        lines += ["## Problems", "", *problems, ""]
    lines += ["## Examples", "", "| example | task | gold turns | replies | PAUC ω=0.5 | timeline |", "|---|---|---|---|---|---|"]
    for e in report["examples"]:
        tl = f"![]({e['timeline']})" if e.get("timeline") else ""
        lines.append(f"| {e['id']} | {e['task']} | {e['n_gold']} | {e['n_replies']} | {_pct(e['pauc_0.5'])} | {tl} |")
    return "\n".join(lines) + "\n"


def write_report(result: EvalResult, judge_id: str, settings: RunSettings, timelines: bool = True) -> dict[str, Path]:
    """Write scores.jsonl, report.json, report.md and timelines/*.png; returns their paths."""
    from dataclasses import asdict

    out = result.out_dir
    turns_by_ex: dict[str, list[TurnScore]] = {}
    for t in result.scores.turns:
        turns_by_ex.setdefault(t.example_id, []).append(t)
    files: dict[str, Path] = {}
    scores_path = out / "scores.jsonl"
    write_text_atomic(scores_path, "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n"
                                           for t in result.scores.turns))
    files["scores"] = scores_path
    examples = []
    for ex in result.dataset:
        turns = turns_by_ex.get(ex.id, [])
        pred = result.predictions.get(ex.id)
        entry: dict[str, Any] = {
            "id": ex.id, "task": ex.task, "n_gold": len(ex.answers),
            "n_replies": len(pred.replies) if pred else 0,
            "pauc_0.5": (sum(t.pauc[HEADLINE_OMEGA] for t in turns) / len(turns)) if turns else None,
            "error": pred.error if pred else "no prediction",
        }
        if timelines:
            rel = Path("timelines") / f"{safe_name(ex.id)}.png"
            draw_timeline(ex, pred, turns, out / rel)
            entry["timeline"] = rel.as_posix()
            files[f"timeline:{ex.id}"] = out / rel
        examples.append(entry)
    outcome = result.scores.outcome
    failures = [f"{t.example_id} turn {t.turn}: {f}" for t in result.scores.turns for f in t.failures]
    report = {
        "dataset": str(result.dataset.path),
        "settings": asdict(settings),
        "judge": {"id": judge_id, "judged": outcome.judged, "cached": outcome.cached,
                  "failed": len(outcome.failures), "failures": failures[:MAX_LISTED_FAILURES]},
        "summary": result.scores.summary.to_json(),
        "skipped": result.skipped,
        "examples": examples,
    }
    files["report_json"] = out / "report.json"
    write_json_atomic(files["report_json"], report)
    files["report_md"] = out / "report.md"
    write_text_atomic(files["report_md"], _markdown(report))
    return files
