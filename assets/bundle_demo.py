"""Copy the trained demo model into ``assets/models/demo`` with its provenance (run by hand, then commit).

    duet train demo                      # SFT → export (≈ 3–4 min on 2 cores; --with-grpo adds GRPO)
    python assets/bundle_demo.py [--from OUT_DIR]

``OUT_DIR`` is the recipe's ``out_dir`` (default ``.cache/train/demo``); its ``export/`` folder holds the
GGUF pair that ``duet train export`` wrote. The pair is validated (``check_pair``) before it is copied,
and ``provenance.json`` records the recipe (path and sha256), the code commit it was trained with,
each file's size and sha256 (``app.core.assets.verify_bundled`` checks them), and the held-out
numbers of ``demo_summary.json`` when present.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    from app.modelhub.validate import check_pair, find_mmproj

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", type=Path, default=REPO / ".cache" / "train" / "demo")
    ap.add_argument("--recipe", type=Path, default=REPO / "models" / "recipes" / "demo.toml")
    ap.add_argument("--commit", help="the code commit the model was trained with (default: HEAD)")
    a = ap.parse_args()
    models = [p for p in sorted((a.src / "export").glob("*.gguf")) if not p.name.startswith("mmproj-")]
    if len(models) != 1:
        raise SystemExit(f"{a.src / 'export'}: expected one text GGUF, found {[p.name for p in models]}")
    model = models[0]
    mmproj = find_mmproj(model)
    if mmproj is None:
        raise SystemExit(f"{model}: no mmproj beside it")
    check_pair(model, mmproj)
    dest = REPO / "assets" / "models" / "demo"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    files = {}
    for role, src in (("model", model), ("mmproj", mmproj)):
        shutil.copyfile(src, dest / src.name)
        files[role] = {"name": src.name, "size": src.stat().st_size, "sha256": sha256(dest / src.name)}
    commit = a.commit or subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True).stdout.strip()
    summary_path = a.src / "demo_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # `duet train demo` runs GRPO only with --with-grpo; the summary says which stages made the exported model
    stages = ("SFT + GRPO" if "grpo" in summary else "SFT") if summary else "SFT (GRPO unknown: no demo_summary.json)"
    prov = {
        "name": "demo",
        "what": f"the offline demo model: a tiny Qwen2.5-VL taken by {stages} from silent to useful on "
                "synthetic proactive videos (it only knows that synthetic world)",
        "made_by": "duet train demo",
        "recipe": str(a.recipe.relative_to(REPO)),
        "recipe_sha256": sha256(a.recipe),
        "code_commit": commit,
        "bundled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    if summary:  # the held-out evaluations and the engine parity (not the loss curve)
        prov["heldout"] = {stage: summary[stage].get("evals", []) for stage in ("sft", "grpo") if stage in summary}
        if "parity" in summary:
            prov["parity"] = summary["parity"]
    (dest / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n", encoding="utf-8")
    total = sum(f["size"] for f in files.values())
    print(f"{dest}: {model.name} + {mmproj.name} ({total / 1e6:.1f} MB), provenance.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
