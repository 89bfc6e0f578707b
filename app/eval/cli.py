"""``duet eval``: run + score + report (the default action) and ``duet eval make-synthetic``.

Usage::

    duet eval DATASET --model M [--out DIR] [--judge auto|exact|overlap|llm] [--judge-url URL --judge-model NAME]
    duet eval DATASET --remote URL1,URL2,…  (the dataset split across `duet serve` servers, one worker each)
    duet eval run DATASET ...              (the same, spelled out)
    duet eval DATASET --score-only --out DIR --judge llm ...   (rescore saved predictions, no model)
    duet eval make-synthetic OUT [--families appear,colour] [--difficulty easy,hard] [--per-family 2] [--seed 0]

argparse has no "default sub-command", so the ``eval`` parser takes the run options plus a first
positional (the dataset, or an action name) and hands the remainder to the action's own parser.
Exit status: 0 done; 3 done but with judge failures or examples that stopped early (they are in the
report; a rerun retries them); 2 bad input; 130 interrupted (a rerun goes on where it stopped).

Progress goes to stderr, one line a finished video with the estimated time left: rewritten in place on
a terminal, one line each otherwise (a log file, CI).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from app.core.config import BACKEND_FLAGS, BackendSettings, SessionConfig, add_arguments, from_args
from app.core.errors import DuetError, InputError

ACTIONS = ("run", "make-synthetic")
EXIT_INCOMPLETE = 3


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (as for `duet run`)")
    g.add_argument("--model", help="library name, 'tiny', or a text GGUF path")
    g.add_argument("--mmproj", help="vision projector GGUF (default: the mmproj beside the model)")
    g.add_argument("--remote", metavar="URL[,URL…]",
                   help="instead of --model: OpenAI-compatible servers (`duet serve`), e.g. "
                        "http://gpu1:8080/v1,http://gpu2:8080/v1; the videos are split between them")
    g.add_argument("--remote-model", default="", metavar="NAME",
                   help="model name to send (default: the one each server lists; they must agree)")
    g.add_argument("--api-key-env", default="DUET_API_KEY",
                   help="environment variable holding the servers' API key")
    add_arguments(g, BackendSettings, ("n_ctx", "n_threads", "n_gpu_layers"), BACKEND_FLAGS)
    s = p.add_argument_group("stream")
    add_arguments(s, SessionConfig, ("interval", "frames_per_turn", "tokens_per_frame", "max_new_tokens"))
    j = p.add_argument_group("judge")
    j.add_argument("--judge", choices=["auto", "exact", "overlap", "llm"], default="auto",
                   help="auto: exact for templated (synthetic) sets, else overlap; llm needs --judge-url/-model")
    j.add_argument("--judge-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1")
    j.add_argument("--judge-model", help="judge model name (the paper used gpt-4.1)")
    j.add_argument("--judge-key-env", default="DUET_JUDGE_API_KEY",
                   help="environment variable holding the judge API key (OPENAI_API_KEY is tried next)")
    j.add_argument("--judge-workers", type=int, default=4, help="judge requests in flight")
    j.add_argument("--judge-retries", type=int, default=2)
    j.add_argument("--judge-timeout", type=float, default=60.0)
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output folder (default: eval-runs/<dataset>-<model>)")
    o.add_argument("--video-root", help="folder the dataset's video paths are relative to")
    o.add_argument("--restart", action="store_true", help="discard earlier predictions in --out")
    o.add_argument("--skip-missing", action="store_true", help="leave out examples whose video is missing")
    o.add_argument("--score-only", action="store_true", help="score the predictions in --out; run no model")
    o.add_argument("--no-timelines", action="store_true", help="skip the PNG timelines")


def _configure(p: argparse.ArgumentParser) -> None:
    _add_run_options(p)
    p.add_argument("target", nargs="?", metavar="DATASET",
                   help="dataset file (.jsonl Duet, .json ProactiveVideoQA) or folder; or an action: "
                        + ", ".join(ACTIONS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_eval)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``eval`` on the ``duet`` command's sub-parsers."""
    p = subparsers.add_parser(
        "eval", help="evaluate a model on a proactive video QA set (PAUC); make synthetic sets",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)


def synthetic_parser() -> argparse.ArgumentParser:
    from app.eval.synthetic import DIFFICULTIES, FAMILIES

    p = argparse.ArgumentParser(prog="duet eval make-synthetic",
                                description="Write short scripted videos with templated gold answers.")
    p.add_argument("out", help="output folder (videos/ + dataset.jsonl)")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    p.add_argument("--difficulty", default="easy", help=f"comma list of {', '.join(DIFFICULTIES)}")
    p.add_argument("--per-family", type=int, default=2, help="videos per family and difficulty")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=112, help="frame side in pixels (multiple of 28 advised)")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--duration", type=float, help="seconds (default 8/10/12 by difficulty)")
    p.add_argument("--codec", choices=["MJPG", "mp4v"], default="MJPG", help="MJPG → .avi, mp4v → .mp4")
    p.add_argument("--layout", choices=["jsonl", "pvqa", "both"], default="jsonl")
    return p


def cmd_make_synthetic(argv: list[str]) -> int:
    from app.eval.synthetic import SyntheticConfig, make_synthetic

    a = synthetic_parser().parse_args(argv)
    cfg = SyntheticConfig(
        families=[f.strip() for f in a.families.split(",") if f.strip()],
        difficulties=[d.strip() for d in a.difficulty.split(",") if d.strip()],
        per_family=a.per_family, seed=a.seed, size=a.size, fps=a.fps, duration=a.duration, codec=a.codec)
    layouts = ("jsonl", "pvqa") if a.layout == "both" else (a.layout,)
    ds = make_synthetic(a.out, cfg, layouts)
    print(f"{ds.path}: {len(ds)} videos, {ds.n_turns} gold turns")
    return 0


def judge_from_flags(a: argparse.Namespace, templated: bool):
    """The judge the flags ask for (``auto``: exact match only where answers are templated)."""
    from app.eval.judges import make_judge

    kind = a.judge
    if kind == "auto":
        kind = "exact" if templated else "overlap"
    key = os.environ.get(a.judge_key_env) or os.environ.get("OPENAI_API_KEY") if kind == "llm" else None
    return make_judge(kind, a.judge_url or "", a.judge_model or "", api_key=key, timeout=a.judge_timeout,
                      retries=a.judge_retries)


def _backend_factory(a: argparse.Namespace):
    from app.engine.factory import make_backend
    from app.modelhub.library import resolve_model

    model, mmproj = resolve_model(a.model, a.mmproj)
    settings = from_args(BackendSettings, a)

    def factory():
        return make_backend(str(model), str(mmproj), settings)

    return factory, f"{model.name} + {mmproj.name}"


def _remote_factories(a: argparse.Namespace):
    """One backend per ``--remote`` server, each asked now which model it serves (so a server that is down,
    refuses the key or serves another model is said before anything runs). Returns the factories, their
    labels (host:port) and the served model's name."""
    import urllib.parse

    from app.core.textsafe import without_userinfo
    from app.engine.backend import BackendError
    from app.engine.vllm_remote import remote_backend

    urls = [u.strip() for u in a.remote.split(",") if u.strip()]
    if not urls:
        raise InputError("--remote: give one or more server URLs, comma-separated")
    if len(set(urls)) < len(urls):
        raise InputError("--remote: a server is listed twice; it runs one chat at a time, so list it once")
    backends = []
    for url in urls:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise InputError(f"--remote {without_userinfo(url)}: not an http(s) URL")
        try:
            backends.append(remote_backend(url, model=a.remote_model, api_key_env=a.api_key_env))  # vLLM's own
        except BackendError as e:
            raise BackendError(without_userinfo(str(e))) from None
    models = {b.model for b in backends}
    if len(models) > 1:
        served = ", ".join(f"{without_userinfo(u)} serves '{b.model}'" for u, b in zip(urls, backends))
        raise InputError(f"the servers serve different models ({served}); one evaluation needs one model: "
                         "start them with the same --model (or name it with --remote-model)")
    labels = [urllib.parse.urlsplit(u).netloc.rpartition("@")[2] for u in urls]
    return [lambda b=b: b for b in backends], labels, backends[0].model


class StatusLine:
    """Progress on stderr: on a terminal one line rewritten in place (messages go above it), otherwise one
    plain line per update, with no control characters, for log files and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = ""

    def status(self, text: str) -> None:
        if not self.tty:
            print(text, file=self.stream, flush=True)
            return
        import shutil

        self.last = text[: max(20, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r\x1b[K" + self.last)
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty and self.last:
            self.stream.write("\r\x1b[K")
        print(text, file=self.stream, flush=True)
        if self.tty and self.last:
            self.stream.write(self.last)
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()
            self.last = ""


def cmd_run(a: argparse.Namespace) -> int:
    from app.eval.dataset import load_dataset
    from app.eval.runner import RunSettings, run_eval

    if not a.target:
        raise InputError("give a DATASET (file or folder); see `duet eval -h`")
    dataset = load_dataset(a.target, a.video_root)  # validate before anything loads
    templated = all(e.meta.get("templated") for e in dataset)
    judge = judge_from_flags(a, templated)
    factory, model_desc, labels, name = None, "", None, a.model or "scored"
    if a.remote and a.model:
        raise InputError("give --model (this computer) or --remote (servers), not both")
    if not a.score_only:
        if a.remote:
            factory, labels, served = _remote_factories(a)
            model_desc, name = f"remote: {served}", served
        elif not a.model:
            raise InputError("--model or --remote is required (or --score-only to rescore saved predictions)")
        else:
            factory, model_desc = _backend_factory(a)
    stem = Path(dataset.path).parent.name if dataset.path and dataset.path.stem == "dataset" else Path(a.target).stem
    out = Path(a.out) if a.out else Path("eval-runs") / f"{stem}-{Path(name).stem}"
    settings = RunSettings(interval=a.interval, frames_per_turn=a.frames_per_turn,
                           tokens_per_frame=a.tokens_per_frame, max_new_tokens=a.max_new_tokens, model=model_desc)
    line = StatusLine()
    try:
        result = run_eval(a.target, out, factory, judge, settings=settings, video_root=a.video_root,
                          judge_workers=a.judge_workers, restart=a.restart, skip_missing=a.skip_missing,
                          timelines=not a.no_timelines, progress=line.message, status=line.status,
                          backend_labels=labels)
    except KeyboardInterrupt:
        line.close()
        print(f"duet eval: interrupted; the videos finished are kept in {out / 'predictions.jsonl'}: run the "
              "same command again to go on from there", file=sys.stderr)
        return 130
    line.close()
    s = result.scores.summary
    pct = {w: ("–" if v is None else f"{v * 100:.1f}") for w, v in s.pauc.items()}
    dup = "–" if s.duplicate_proportion is None else f"{s.duplicate_proportion * 100:.1f}%"
    flag = "  [INCOMPLETE: judge failures]" if s.judge_failures else ""
    print(f"PAUC ω=0/0.5/1: {pct[0.0]} / {pct[0.5]} / {pct[1.0]}  ({s.n_turns} gold turns, {s.n_examples} examples){flag}")
    print(f"duplicates: {dup}; replies per example: "
          f"{'–' if s.replies_per_example is None else f'{s.replies_per_example:.2f}'}; judge: {judge.id}")
    print(f"report: {result.files['report_md']}")
    problems = s.judge_failures + len(s.examples_with_errors)
    if problems:
        print(f"incomplete: {s.judge_failures} judge failure(s), {len(s.examples_with_errors)} example(s) "
              "stopped early; see the report, rerun to retry", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Dispatch: ``make-synthetic`` gets the remainder; otherwise the remainder is more run options."""
    rest = list(a.rest or [])
    if a.target == "make-synthetic":
        return cmd_make_synthetic(rest)
    if a.target == "run":
        a.target = rest.pop(0) if rest and not rest[0].startswith("-") else None
    if rest:
        more = argparse.ArgumentParser(prog="duet eval", add_help=False)
        _add_run_options(more)
        more.parse_args(rest, namespace=a)
    return cmd_run(a)


def build_parser() -> argparse.ArgumentParser:
    """A standalone ``eval`` parser (``python -m app.eval``), identical to the registered one."""
    p = argparse.ArgumentParser(prog="duet eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (DuetError, OSError) as e:  # DatasetError, RunMismatch, ModelFileError, BackendError …
        print(f"duet eval: error: {e}", file=sys.stderr)
        return 2
