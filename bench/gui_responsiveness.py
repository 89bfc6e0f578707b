"""How long does the Qt event loop stall while a session runs? (The GUI must never freeze.)

Runs the real main window (offscreen by default) on a real video with the tiny model, every turn
forced to speak (talkativeness +50: the most GUI work per step — chat bubble, thumbnail, overlay,
speech, transcript write). A precise 5 ms QTimer on the GUI thread records when it fires; a stall is
the gap between two firings beyond the timer period. Reported: the longest stall, the 99th
percentile gap, and the same for an idle window as a baseline.

    .venv/bin/python bench/gui_responsiveness.py --seconds 30
    QT_QPA_PLATFORM=xcb DISPLAY=:99 .venv/bin/python bench/gui_responsiveness.py   # under a real X server
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
    return [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]


def _summary(gaps: list[float]) -> dict:
    gaps_sorted = sorted(gaps)
    p99 = gaps_sorted[int(0.99 * (len(gaps_sorted) - 1))] if gaps_sorted else 0.0
    return {"ticks": len(gaps), "longest_stall_ms": round(max(0.0, max(gaps, default=0) - PERIOD_MS), 1),
            "p99_gap_ms": round(p99, 1), "median_gap_ms": round(statistics.median(gaps), 2) if gaps else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--mute", action="store_true", help="no speech synthesis (isolates its share of the CPU)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "gui_responsiveness.json")
    args = p.parse_args(argv)

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
    w.set_model("tiny")
    w.interval_spin.setValue(args.interval)
    w.frames_spin.setValue(args.frames)
    w.talk_slider.setValue(50)
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
    result = {
        "what": "longest Qt event-loop stall while a session runs (real window, tiny model, real video)",
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


if __name__ == "__main__":
    sys.exit(main())
