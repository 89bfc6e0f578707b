"""Job plumbing shared by every stage: JSON-lines progress, checkpoints, cancellation, failures.

A training job runs as its own process (the app's training page, the CLI and the tests all start
it the same way) and speaks only through JSON lines on stdout, one object per event::

    {"event": "start", "stage": "sft", "steps": 300, "device": "cpu", ...}
    {"event": "step", "stage": "sft", "step": 12, "steps": 300, "loss": 1.93, "lr": 0.002, "eta_s": 81.0}
    {"event": "eval", "stage": "sft", "step": 300, "pauc": 0.61, ...}
    {"event": "checkpoint", "stage": "sft", "step": 50, "path": "..."}
    {"event": "warning", "message": "..."}
    {"event": "error", "kind": "oom" | "disk" | "data" | "config" | ..., "message": "...", "advice": "..."}
    {"event": "done", "stage": "sft", ...}

Checkpoints are safetensors (trainable weights, optimizer tensors) + ``state.json`` (step, metrics,
the recipe's hash), written to a temporary folder and renamed, so a job killed at any instant
resumes from the last complete one. All randomness is derived from (seed, step), so a resumed run
reproduces an uninterrupted one exactly. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from app.core.child_job import ChildJob
from app.core.errors import ResourceError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_OOM = 3
EXIT_CANCELLED = 130

OOM_ADVICE = (
    "Out of memory. Try, in this order: sft.batch / grpo.clips_per_step smaller (memory is per dialogue, "
    "batch only adds time); data.tokens_per_frame 128 → 64; shorter clips (fewer frames per dialogue); "
    "sft.gradient_checkpointing = true; sft.lora = true (LoRA r=16 needs no optimizer state for the frozen "
    "weights); model.dtype = \"bfloat16\"; close other programs using the GPU."
)


class JobError(ResourceError):
    """A failure the user can act on; ``kind`` and ``advice`` go into the error event."""

    def __init__(self, kind: str, message: str, advice: str = "", code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.kind, self.advice, self.code = kind, advice, code


class Cancelled(Exception):
    """The job was asked to stop (SIGTERM/SIGINT or a cancel file); a checkpoint was written."""


@dataclass
class Reporter:
    """Writes progress events to a stream (stdout) and appends them to ``progress.jsonl``."""

    stream: TextIO | None = None
    log_path: Path | None = None
    quiet: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        rec = {"event": event, "time": round(time.time(), 3), **data}
        self.events.append(rec)
        line = json.dumps(rec, default=_json_default)
        if self.stream is not None and not self.quiet:
            self.stream.write(line + "\n")
            self.stream.flush()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        return rec


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


class StopFlag:
    """Set by SIGTERM/SIGINT or by the presence of ``<out>/CANCEL`` (how the app asks a job to stop)."""

    def __init__(self, cancel_file: Path | None = None) -> None:
        self.cancel_file = cancel_file
        self._set = False
        self._old: dict[int, Any] = {}

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (tests calling a stage in-process)
                pass
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self._set = True

    def __bool__(self) -> bool:
        return self._set or bool(self.cancel_file and self.cancel_file.exists())

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


class Eta:
    """Seconds left from the mean step time since this process started (resumes restart the clock)."""

    def __init__(self, first_step: int, total: int) -> None:
        self.t0, self.first, self.total = time.perf_counter(), first_step, total

    def __call__(self, step: int) -> float:
        done = step - self.first
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.t0) / done * (self.total - step)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _nbytes(tensors: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optimizer ``state_dict`` → (tensors for safetensors, JSON-able rest)."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = t
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def check_disk(folder: Path, need_bytes: int) -> None:
    """Refuse to start a checkpoint that cannot fit (a half-written one is worse than none)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes * 1.1 + 16 * 2**20:
        raise JobError("disk", f"not enough disk space for a checkpoint in {folder}: need about "
                       f"{need_bytes / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free",
                       "Free some space or point out_dir at a larger disk; the last complete checkpoint is kept.")


def save_checkpoint(folder: Path, model_tensors: dict[str, Any], opt_state: dict[str, Any], state: dict[str, Any],
                    keep: int = 1) -> Path:
    """``folder/step-000123/{model,optimizer}.safetensors + state.json``; older ones pruned to ``keep``."""
    from safetensors.torch import save_file

    opt_tensors, opt_meta = flatten_optimizer(opt_state)
    check_disk(folder, _nbytes(model_tensors) + _nbytes(opt_tensors))
    step = int(state["step"])
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_tensors, str(tmp / "model.safetensors"))
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}, default=_json_default, indent=1))
    for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    cands = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return cands[-1] if cands else None


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model tensors, optimizer state_dict, state)."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    opt_meta = state.pop("optimizer")
    model = load_file(str(path / "model.safetensors"))
    opt = unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), opt_meta)
    return model, opt, state


def is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def run_guarded(fn: Any, reporter: Reporter, stage: str) -> int:
    """Run a stage; turn every failure into one error event and an exit code (never a traceback)."""
    from app.trainer.config import ConfigError
    from app.trainer.data import DataError

    try:
        fn()
        return EXIT_OK
    except Cancelled:
        reporter.emit("cancelled", stage=stage, message="stopped on request; rerun the same command to resume")
        return EXIT_CANCELLED
    except JobError as e:
        reporter.emit("error", stage=stage, kind=e.kind, message=str(e), advice=e.advice)
        return e.code
    except (ConfigError, DataError) as e:
        reporter.emit("error", stage=stage, kind="config" if isinstance(e, ConfigError) else "data", message=str(e),
                      advice="fix the named file/field and rerun")
        return EXIT_BAD_INPUT
    except FileNotFoundError as e:
        reporter.emit("error", stage=stage, kind="missing", message=str(e), advice="check the paths in the recipe")
        return EXIT_BAD_INPUT
    except BaseException as e:  # noqa: BLE001 - OOM arrives as RuntimeError/MemoryError
        if is_oom(e):
            reporter.emit("error", stage=stage, kind="oom", message=str(e).splitlines()[0][:300], advice=OOM_ADVICE)
            return EXIT_OOM
        if isinstance(e, KeyboardInterrupt):
            reporter.emit("cancelled", stage=stage, message="interrupted")
            return EXIT_CANCELLED
        if _peer_failed(e):
            reporter.emit("error", stage=stage, kind="peer", message="another training process of this job stopped "
                          f"({str(e).splitlines()[0][:200]})", advice="torchrun restarts the processes from the last "
                          "checkpoint while --max-restarts allows; otherwise run the same command again")
            return EXIT_FAILED
        reporter.emit("error", stage=stage, kind="internal", message=f"{type(e).__name__}: {e}",
                      advice="this is a bug; the progress log and the last checkpoint are kept")
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


def _peer_failed(e: BaseException) -> bool:
    """Whether a collective failed because another rank died (gloo/NCCL), not because of this rank's own bug."""
    from app.trainer.distributed import context

    if not context().enabled:
        return False
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, dist.DistError) or any(s in text for s in ("Connection closed by peer", "Connection reset",
                                                                    "NCCL", "gloo"))


def gpus_args(gpus: int) -> list[str]:
    """What a job's argv gets for the Train page's device choice: nothing for one device, ``--gpus N`` for N.

    The page offers what :func:`app.trainer.distributed.available_devices` lists (the CPU, then each CUDA GPU;
    ``gpus`` of the k-th GPU entry is k), appends this to the ``train sft|grpo|feedback`` argv it starts with
    :meth:`JobProcess.start`, and reads the choice back from ``job.json``'s ``argv``. The job itself then runs
    under torchrun (app/trainer/distributed.py).
    """
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    return ["--gpus", str(gpus)] if gpus > 1 else []


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# a job as a process the app can leave and find again


class JobProcess(ChildJob):
    """A training job as a :class:`~app.core.child_job.ChildJob`, known by its folder (``<folder>/job.json``).

    Why a detached process: training takes minutes to hours and must survive the window closing
    (or the app crashing); the Train page finds it again from the folder. The job writes its own
    ``progress.jsonl`` (the Reporter appends every event there; its streams go to ``job.log``),
    cancelling is the ``CANCEL`` file the job polls (it checkpoints, then exits 130), and resuming
    is starting the same command again. Nothing here imports Qt: the page reads on its watcher's tick.
    """

    @classmethod
    def start(cls, argv: list[str], folder: Path, env: dict[str, str] | None = None) -> JobProcess:
        job = cls(folder)
        if job.running():
            raise JobError("busy", f"a job is already running in {folder}", "cancel it or wait for it", code=2)
        job.launch(argv, env=env)
        return job

    def cancel(self) -> None:
        """Ask the job to stop at the next step (it writes a checkpoint first)."""
        self.request_stop()

    def outcome(self, events: list[dict[str, Any]]) -> str | None:
        """done | cancelled | error (from the job's last top-level event), or None while it runs."""
        for e in reversed(events):
            if e.get("event") in ("cancelled", "error"):
                return str(e["event"])
            if e.get("event") == "done" and e.get("stage") in ("feedback", "demo"):
                return "done"
        return None
