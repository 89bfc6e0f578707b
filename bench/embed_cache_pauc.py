"""What reusing embeddings of near-identical frames does to answer quality (PAUC) on the synthetic sets.

Runs ``duet eval``'s own runner (``app.eval.runner.run_eval``, exact-match judge on the templated
synthetic answers) with the demo model on a freshly generated synthetic set (held-out seed), once per
setting: embedding cache off, exact reuse only (the default), and near-identical reuse at a few
thresholds. Exact reuse gives bit-identical logits (tests/engine/test_llama_backend.py), so any change
comes from the near-identical option. Reported: PAUC at ω = 0 / 0.5 / 1, replies per example, the
cache's hit rate.

    .venv/bin/python bench/embed_cache_pauc.py [--per-family 2] [--difficulty easy,medium] [--thresholds 1 4]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine.llama_backend import LlamaBackend, LlamaSettings  # noqa: E402
from app.eval.judges import ExactMatchJudge  # noqa: E402
from app.eval.runner import RunSettings, run_eval  # noqa: E402
from app.eval.synthetic import SyntheticConfig, make_synthetic  # noqa: E402
from bench._common import model_bench_parser, print_table, start_model_bench, write_results  # noqa: E402


def main() -> None:
    ap = model_bench_parser(__doc__)
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--difficulty", default="easy,medium")
    ap.add_argument("--seed", type=int, default=4242, help="synthetic set seed (the demo trains on others)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 4.0])
    a, info, model, mmproj = start_model_bench(ap)
    t0 = time.perf_counter()
    settings = {"cache off": (0, 0.0), "exact reuse (default)": (64, 0.0)}
    settings |= {f"near-identical ≤ {t:g}": (64, t) for t in a.thresholds}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticConfig(difficulties=[d.strip() for d in a.difficulty.split(",")], per_family=a.per_family,
                              seed=a.seed)
        ds = make_synthetic(Path(tmp) / "set", cfg)
        for name, (mib, near) in settings.items():
            made: list[LlamaBackend] = []

            def factory(mib=mib, near=near, made=made):
                b = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=8192, n_gpu_layers=0, embed_cache_mib=mib,
                                                              near_identical=near))
                made.append(b)
                return b

            t1 = time.perf_counter()
            res = run_eval(ds.path, Path(tmp) / name.replace(" ", "_"), factory, ExactMatchJudge(),
                           settings=RunSettings(model=model.name), timelines=False)
            s = res.scores.summary
            lookups = sum(b.embed_cache.stats.lookups for b in made)  # the stats outlive the freed backends
            hits = sum(b.embed_cache.stats.hits + b.embed_cache.stats.near_hits for b in made)
            out[name] = {"pauc": {str(k): v for k, v in s.pauc.items()}, "replies_per_example": s.replies_per_example,
                         "n_examples": s.n_examples, "n_turns": s.n_turns, "cache_lookups": lookups,
                         "cache_hits": hits, "hit_rate": hits / lookups if lookups else 0.0,
                         "seconds": time.perf_counter() - t1}
            print(f"  {name}: PAUC {s.pauc}, hit rate {out[name]['hit_rate']:.0%}", flush=True)

    def pct(v):
        return "–" if v is None else f"{v * 100:.1f}"

    print_table(f"{a.model} model on a synthetic set (seed {a.seed}, {a.difficulty}, {a.per_family}/family; "
                f"{next(iter(out.values()))['n_examples']} videos, exact-match judge)",
                ["frames reused", "PAUC ω=0", "ω=0.5", "ω=1", "replies/example", "cache hit rate"],
                [[k, pct(v["pauc"]["0.0"]), pct(v["pauc"]["0.5"]), pct(v["pauc"]["1.0"]),
                  v["replies_per_example"], f"{v['hit_rate']:.0%}"] for k, v in out.items()])
    write_results("embed_cache_pauc", {"machine": info, "model": [str(model), str(mmproj)], "seed": a.seed,
                                       "difficulty": a.difficulty, "per_family": a.per_family, "results": out,
                                       "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
