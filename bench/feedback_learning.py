"""Issue 25 measured: three corrections in words the demo never said (wrong, missed, late; app/trainer/feedback_scenario.py)
→ `duet train feedback` on the bundled demo → per-correction verdicts through the engine, held-out decisions and
PAUC against the base, the noise of one reply, and the job's wall time on this machine.

    nice -n 10 .venv/bin/python bench/feedback_learning.py [--steps 40] [--max-steps 160] [--weight 8]
        [--out bench/results/feedback_learning.json]

Each run starts from a fresh data folder (a temporary DUET_DATA_DIR), so nothing cached from an earlier job is used
except the synthetic replay clips, which are generated once into the job folder like any job's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--max-steps", type=int, default=160)
    ap.add_argument("--weight", type=float, default=None)
    ap.add_argument("--kinds", default="wrong,missed,late", help="which of the scenario's marks to give")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", type=Path, help="data folder to use and keep (default: a temporary one)")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="duet-fb-"))
    os.environ["DUET_DATA_DIR"] = str(root / "data")
    from app.core.assets import bundled_demo
    from app.core.sessions import SessionStore
    from app.trainer import feedback_job
    from app.trainer.bundled_demo import bundled_demo_checkpoint
    from app.trainer.feedback_job import build_recipe, run_feedback
    from app.trainer.feedback_report import describe
    from app.trainer.feedback_scenario import PLANS, marked_sessions
    from app.trainer.jobs import Reporter, StopFlag

    demo = bundled_demo()
    assert demo is not None
    hf = bundled_demo_checkpoint(root / "bundled-hf")
    plans = tuple(p for p in PLANS if p.kind in args.kinds.split(","))
    dirs = marked_sessions(SessionStore(root / "data" / "sessions"), root / "clips", demo.model, demo.mmproj, plans)
    weight = args.weight if args.weight is not None else feedback_job.MARKED_WEIGHT
    t0 = time.monotonic()
    cfg, raw = build_recipe(str(hf), "fixed", dirs, steps=args.steps, synthetic=True, max_steps=args.max_steps,
                            weight=weight)
    reporter = Reporter(sys.stderr, cfg.out / "progress.jsonl", quiet=True)
    run_feedback(cfg, raw, reporter, StopFlag(), library_root=root / "data" / "models")
    wall = time.monotonic() - t0
    text = describe(reporter.events)
    print(text)
    report = json.loads((cfg.out / "feedback_report.json").read_text())
    result = {"command": " ".join(["nice -n 10 .venv/bin/python bench/feedback_learning.py", *sys.argv[1:]]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "steps_per_round": args.steps, "max_steps": args.max_steps, "weight": weight,
              "kinds": [p.kind for p in plans], "wall_s": round(wall, 1), "report": report, "text": text}
    print(f"wall {wall:.0f} s, steps {report['steps']}, rounds {len(report['rounds'])}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
