"""How long does the Qt event loop stall while a session runs? (The GUI must never freeze.)

Runs the real main window (offscreen by default) on a real video with the tiny model, every turn
forced to speak (talkativeness +50: the most GUI work per step — chat bubble, thumbnail, overlay,
speech, transcript write). A precise 5 ms QTimer on the GUI thread records when it fires; a stall is
the gap between two firings beyond the timer period. Reported: the longest stall, the 99th
percentile gap, and the same for an idle window as a baseline.

    .venv/bin/python bench/gui_responsiveness.py --seconds 30
    QT_QPA_PLATFORM=xcb DISPLAY=:99 .venv/bin/python bench/gui_responsiveness.py   # under a real X server

``--compare`` runs the GUI's thread policy against the one it replaced, each in a fresh process, alternating
(A B A B), on the model given by ``--model`` (a GGUF with its mmproj beside it, e.g. the 3B shape that
``bench/model_3b.py --keep`` leaves in .cache/bench-3b): ``yield`` — every core, the model's threads at nice +10
(app/core/config.py: lower_compute_priority) — and ``leave-one`` — one core left to the window at the
window's priority (the earlier policy, and still the one where a thread's priority cannot be lowered). A
model slower than the interval keeps the CPU saturated, so both the stalls and the model's throughput
(steps done, tokens per frame the live cadence settled on) show what each policy costs.

    .venv/bin/python bench/gui_responsiveness.py --compare --model .cache/bench-3b/rand3b-q4_k_m.gguf \
        --interval 2 --frames 1 --talk -50 --seconds 60 --mute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("DUET_CACHE_DIR", str(REPO / ".cache" / "tiny"))
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
PERIOD_MS = 5


def _gaps(app, seconds: float, until=None) -> list[float]:  # noqa: ANN001
    from PySide6.QtCore import Qt, QTimer

    stamps: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(PERIOD_MS)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and (until is None or not until()):
        app.processEvents()
        time.sleep(0.0005)  # like exec(): the loop sleeps when there is nothing to do
    timer.stop()
    gaps = _Gaps((b - a) * 1e3 for a, b in zip(stamps, stamps[1:]))
    gaps.stamps = stamps  # when each gap ended: where the longest one fell
    return gaps


class _Gaps(list):
    stamps: list[float]


def _summary(gaps: list[float]) -> dict:
    gaps_sorted = sorted(gaps)
    p99 = gaps_sorted[int(0.99 * (len(gaps_sorted) - 1))] if gaps_sorted else 0.0
    worst = max(range(len(gaps)), key=gaps.__getitem__, default=0)
    stamps = getattr(gaps, "stamps", [])
    return {"ticks": len(gaps), "longest_stall_ms": round(max(0.0, max(gaps, default=0) - PERIOD_MS), 1),
            "longest_stall_at_s": round(stamps[worst + 1] - stamps[0], 2) if len(stamps) > worst + 1 else None,
            "over_30ms": sum(1 for g in gaps if g - PERIOD_MS > 30),
            "p99_gap_ms": round(p99, 1), "median_gap_ms": round(statistics.median(gaps), 2) if gaps else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--mute", action="store_true", help="no speech synthesis (isolates its share of the CPU)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "gui_responsiveness.json")
    p.add_argument("--model", default="tiny", help="a model reference: tiny (default), demo, a library name or a GGUF")
    p.add_argument("--talk", type=int, default=50, help="talkativeness (+50: every turn speaks, the most GUI work)")
    p.add_argument("--policy", choices=("yield", "leave-one"), default="yield",
                   help="the GUI's thread policy (leave-one: the earlier one, emulated here)")
    p.add_argument("--compare", action="store_true", help="both policies, alternating, 2 runs each (see above)")
    args = p.parse_args(argv)
    if args.compare:
        return _compare(args, argv or sys.argv[1:])
    if args.policy == "leave-one":
        # What a platform without per-thread priorities gets: one core left, the window's priority kept.
        import app.engine.factory as factory

        factory.lower_compute_priority = lambda *a, **k: False

    from PySide6.QtWidgets import QApplication

    from app.core.sessions import SessionStore
    from app.core.settings import SettingsStore
    from app.modelhub.library import ModelLibrary
    from app.ui.main_window import MainWindow
    from app.ui.speech_bridge import SpeechBridge

    tmp = Path(tempfile.mkdtemp(prefix="duet-bench-"))
    os.environ["DUET_DATA_DIR"] = str(tmp / "data")
    app = QApplication.instance() or QApplication([])
    store = SettingsStore(tmp / "config")
    w = MainWindow(store, session_store=SessionStore(tmp / "sessions"), library=ModelLibrary(tmp / "models"),
                   speech=SpeechBridge(store.load().speech, output_dir=tmp / "voice"), tray=False)
    w.set_source(str(args.video))
    w.set_model(args.model)
    w.interval_spin.setValue(args.interval)
    w.frames_spin.setValue(args.frames)
    w.talk_slider.setValue(args.talk)
    w.set_muted(args.mute)
    w.show()
    w.overlay.show()
    idle = _gaps(app, 3.0)

    steps: list = []
    w.worker.step.connect(steps.append)
    t_load = time.perf_counter()
    w.start()
    loading = _gaps(app, 60.0, until=lambda: bool(steps))
    load_s = time.perf_counter() - t_load
    running = _gaps(app, args.seconds, until=lambda: w.state == "idle")
    w.stop()
    _gaps(app, 10.0, until=lambda: w.state == "idle")
    replies = sum(1 for s in steps if not s.silent)
    step_ms = [s.timings.total_ms for s in steps]
    tpf = [s.cadence.tokens_per_frame for s in steps if s.cadence is not None]
    result = {
        "what": "longest Qt event-loop stall while a session runs (real window, real video)",
        "model": args.model, "policy": args.policy, "n_threads": getattr(w.controller.backend, "settings", None)
        and w.controller.backend.settings.n_threads, "loadavg_at_start": list(os.getloadavg()),
        "seconds": args.seconds, "video_s_watched": round(steps[-1].video_time, 1) if steps else 0.0,
        "tokens_per_frame_median": statistics.median(tpf) if tpf else None,
        "platform": os.environ["QT_QPA_PLATFORM"],
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "device": w.device,
        "interval_s": args.interval, "frames_per_turn": args.frames, "speech": not args.mute,
        "steps": len(steps), "replies": replies,
        "step_ms_median": round(statistics.median(step_ms), 1) if step_ms else None,
        "step_ms_max": round(max(step_ms), 1) if step_ms else None,
        "time_to_first_step_s": round(load_s, 2),
        "idle": _summary(idle),
        "loading_model": _summary(loading),
        "running": _summary(running),
    }
    w.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    """Each policy twice, alternating, each run in a fresh process (a thread's priority, once lowered, and
    OpenMP's thread pool last as long as the process)."""
    import subprocess

    base = [a for a in argv if a != "--compare"]
    runs: dict[str, list[dict]] = {"yield": [], "leave-one": []}
    for i, policy in enumerate(["leave-one", "yield", "leave-one", "yield"]):
        out = args.out.with_name(f"{args.out.stem}_{policy}_{i}.json")
        subprocess.run([sys.executable, __file__, *base, "--policy", policy, "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        runs[policy].append(json.loads(out.read_text(encoding="utf-8")))
        r = runs[policy][-1]
        print(f"{policy:9s}: threads {r['n_threads']}, {r['steps']} steps, median {r['step_ms_median']} ms, "
              f"{r['tokens_per_frame_median']} tokens/frame, {r['video_s_watched']} s of video; longest stall "
              f"{r['running']['longest_stall_ms']} ms (at {r['running']['longest_stall_at_s']} s; "
              f"{r['running']['over_30ms']} over 30 ms), p99 gap {r['running']['p99_gap_ms']} ms", flush=True)
    summary = {"what": "the GUI's thread policies side by side (alternating runs, fresh processes)",
               "command": "bench/gui_responsiveness.py " + " ".join(argv), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
