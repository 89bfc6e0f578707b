"""Download + verify throughput of ``duet models pull``'s hub client, over loopback, on this machine.

What a pull of MMDuet2 costs besides the network: huggingface_hub's HTTP client writing the file, then
the sha256 of every byte. Served by the loopback stand-in hub (tests/modelhub/hub_server.py), so the
network is not the limit; the figures bound what the client and the hash add on top of a real link.

    .venv/bin/python bench/pull_throughput.py [--mib 1024]

Writes bench/results/pull_throughput.json and prints the extrapolation to MMDuet2's 7.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MMDUET2_BYTES = 7.5e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    a = ap.parse_args()
    os.environ.pop("HF_HUB_OFFLINE", None)
    from app.modelhub import hub
    from tests.modelhub.hub_server import StandInHub

    data = os.urandom(a.mib * 2**20)
    with StandInHub({"bench/big": {"model.safetensors": data}}) as server, tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_ENDPOINT"] = server.url
        listing = hub.list_repo("bench/big")
        remote = listing.files[0]
        t0 = time.perf_counter()
        path = hub.download("bench/big", listing.commit, remote, Path(tmp))
        total = time.perf_counter() - t0
        t1 = time.perf_counter()
        hub.verify(path, remote)
        hash_s = time.perf_counter() - t1
    mb = len(data) / 1e6
    result = {"bytes": len(data), "download_and_verify_s": round(total, 2), "sha256_s": round(hash_s, 2),
              "download_MBps": round(mb / max(1e-9, total - hash_s), 1), "sha256_MBps": round(mb / hash_s, 1),
              "mmduet2_extra_s_estimate": round(MMDUET2_BYTES / 1e6 / (mb / total), 1),
              "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "loadavg": os.getloadavg()}
    out = REPO / "bench" / "results" / "pull_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
