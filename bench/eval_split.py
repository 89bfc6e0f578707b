"""Evaluation split across servers: ``duet eval --remote`` with one ``duet serve`` and with two.

    .venv/bin/python bench/eval_split.py [--model demo] [--per-family 10] [--rounds 3]

Starts three real ``duet serve`` processes on 127.0.0.1 (the supervisor and its child, as users run
it): A and B with ``--threads 1``, C with ``--threads 2``. Then, ``--rounds`` times and interleaved so
that a change in the machine's load falls on every configuration alike, runs ``duet eval DATASET
--remote …`` as its own process, from scratch (``--restart``), against

* A alone (one server, one thread),
* C alone (one server using both cores: the fair single-server baseline on a 2-core machine),
* A and B (two servers, one thread each),

and reports the wall time of each run, the medians, and the ratio of the two-server median to each
single-server one, with the CPU time each run took in the ``duet eval`` client and in the servers' model
processes (CPU seconds per wall second = the cores a configuration kept busy). Every run must give the
same per-video predictions and the same PAUC (checked; a difference fails the benchmark). The synthetic dataset (``duet eval make-synthetic``, seeded, easy and
hard videos of every family) is made once under ``--work``. Results: bench/results/eval_split.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, machine_info, med, print_table, write_results  # noqa: E402

KEY = "bench-eval-split-" + "k" * 16


def start_server(model: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """A ``duet serve`` on a port the kernel picks; returns it and its base URL once /v1/models answers."""
    env = {**os.environ, "DUET_SERVE_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    err = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", model, "--port", "0",
                             "--threads", str(threads), "--gpu-layers", "0"], cwd=REPO, env=env,
                            stderr=err, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    base = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"duet serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if base is None:
            m = re.search(r" on (http://127\.0\.0\.1:\d+)/v1", log.read_text())
            base = m.group(1) if m else None
        if base is not None:
            req = urllib.request.Request(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            try:
                urllib.request.urlopen(req, timeout=2).read()
                return proc, f"{base}/v1"
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"duet serve did not answer within 180 s: {log.read_text()[-2000:]}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the supervisor and its server child)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += cpu_s(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def client_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_eval(dataset: Path, urls: list[str], out: Path, server_pids: list[int]) -> dict:
    env = {**os.environ, "DUET_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    load = os.getloadavg()[0]
    client0, servers0 = client_cpu_s(), sum(cpu_s(p) for p in server_pids)
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "app", "eval", str(dataset), "--remote", ",".join(urls), "--out", str(out),
            "--no-timelines", "--restart"]
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    client, servers = client_cpu_s() - client0, sum(cpu_s(p) for p in server_pids) - servers0
    if r.returncode != 0:
        raise SystemExit(f"duet eval failed ({r.returncode}):\n{r.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    preds = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        preds[p["question_id"]] = (p["model_response_list"], p["n_turns"], p["error"])
    served = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        b = json.loads(line).get("meta", {}).get("backend", "?")
        served[b] = served.get(b, 0) + 1
    return {"wall_s": round(wall, 2), "loadavg_1m_before": round(load, 2), "client_cpu_s": round(client, 1),
            "servers_cpu_s": round(servers, 1), "cores_busy": round((client + servers) / wall, 2),
            "pauc": report["summary"]["pauc"], "videos_by_server": served, "_preds": preds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="what each `duet serve --model` serves")
    ap.add_argument("--per-family", type=int, default=10, help="videos per family and difficulty")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", help="folder for the dataset, logs and runs (default: a temporary one)")
    a = ap.parse_args()
    info = machine_info()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="eval-split-"))
    dataset = work / "synth" / "dataset.jsonl"
    if not dataset.is_file():
        subprocess.run([sys.executable, "-m", "app", "eval", "make-synthetic", str(work / "synth"),
                        "--difficulty", "easy,hard", "--per-family", str(a.per_family), "--seed", "11"],
                       cwd=REPO, check=True)
    n_videos = len(dataset.read_text().splitlines())
    servers = {}
    try:
        for name, threads in (("A", 1), ("B", 1), ("C", 2)):
            servers[name] = start_server(a.model, threads, work / f"serve-{name}.log")
        configs = {"1 server, 1 thread": ["A"], "1 server, 2 threads": ["C"],
                   "2 servers, 1 thread each": ["A", "B"]}
        runs: dict[str, list[dict]] = {c: [] for c in configs}
        for k in range(a.rounds):
            for c, names in configs.items():
                out = work / f"run-{k}-{len(names)}-{names[0]}"
                r = run_eval(dataset, [servers[n][1] for n in names], out, [servers[n][0].pid for n in names])
                runs[c].append(r)
                print(f"round {k + 1}: {c}: {r['wall_s']:.1f} s (load {r['loadavg_1m_before']}; CPU s: "
                      f"client {r['client_cpu_s']}, servers {r['servers_cpu_s']})", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=30)
    first = runs["1 server, 1 thread"][0]
    same = all(r["_preds"] == first["_preds"] and r["pauc"] == first["pauc"]
               for rs in runs.values() for r in rs)
    medians = {c: med([r["wall_s"] for r in rs]) for c, rs in runs.items()}
    two = medians["2 servers, 1 thread each"]
    ratios = {"2 servers / 1 server (1 thread)": round(two / medians["1 server, 1 thread"], 3),
              "2 servers / 1 server (2 threads)": round(two / medians["1 server, 2 threads"], 3)}
    print_table(f"duet eval --remote, {n_videos} videos ({a.model}), {a.rounds} rounds",
                ["configuration", "wall s (median)", "runs", "client CPU s", "servers CPU s", "cores busy"],
                [[c, medians[c], ", ".join(f"{r['wall_s']:.1f}" for r in runs[c]),
                  med([r["client_cpu_s"] for r in runs[c]]), med([r["servers_cpu_s"] for r in runs[c]]),
                  med([r["cores_busy"] for r in runs[c]])] for c in configs])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    print(f"same predictions and PAUC in every run: {same}")
    for rs in runs.values():
        for r in rs:
            r.pop("_preds")
    write_results("eval_split", {"machine": info, "model": a.model, "videos": n_videos, "rounds": a.rounds,
                                 "runs": runs, "median_wall_s": medians, "ratios": ratios,
                                 "same_predictions_and_pauc": same, "pauc": first["pauc"]})
    if not same:
        raise SystemExit("the runs disagree: a split evaluation must give the single-server predictions")


if __name__ == "__main__":
    main()
