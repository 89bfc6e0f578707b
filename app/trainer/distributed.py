"""Training on several GPUs (or, for tests, several CPU processes) through torchrun: no launcher of our own.

``duet train sft|grpo|feedback … --gpus N`` (N > 1) runs ``python -m torch.distributed.run --standalone
--nproc-per-node N --max-restarts R -m app.trainer.cli …`` (:func:`torchrun_command`); torchrun starts
the N workers, gives each its ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, and restarts all of them when one
dies (elastic restart), after which every stage resumes from its last checkpoint. A worker calls
:func:`init_from_env` once: the process group is NCCL on CUDA (one GPU per ``LOCAL_RANK``) and gloo on
the CPU (how the tests run it on a machine without a GPU).

Why the result does not depend on N (tests/trainer/test_distributed.py):

* The global batch stays the recipe's (``sft.batch`` dialogues, ``grpo.clips_per_step`` clips); each rank
  takes every N-th item of the step's deterministic list (:meth:`DistContext.shard`, what torch's
  ``DistributedSampler`` does with ``shuffle=False``), so N must divide the batch, and each rank
  accumulates its share of the gradient before the ranks sum theirs.
* Every rank starts from the same weights and applies the same summed gradient, so the replicas stay equal;
  rank 0 alone writes checkpoints, of the *unwrapped* model and optimizer (the same files a single process
  writes), which is why a checkpoint resumes under any N.
* Dropout is off in Qwen2.5-VL's config and every random draw derives from (seed, step, item), so the
  same data reach the same weights, up to the order in which floating-point gradients are summed.

``duet train feedback --gpus N`` trains in rounds (app/trainer/feedback_run.py): every rank trains each round
(the same split as SFT), then rank 0 alone exports the model and plays the marked sessions on the engine while
the others wait for its decision (:meth:`DistContext.decide`: another round up to step S, or stop), so every rank
enters the next round together and only rank 0 writes verdicts.

The wrapper (:meth:`DistContext.wrap`): a full SFT fine-tune is sharded with FSDP2 (``fully_shard`` per decoder
layer and the root, app/trainer/fsdp.py: each rank holds 1/N of the weights, gradients and AdamW state; rank 0
gathers the whole state for checkpoints, evaluation and the final model); LoRA trains through DDP
(``torch.nn.parallel.DistributedDataParallel``), a full replica per GPU, as does ``sft.fsdp = "off"``. GRPO
sums the gradients itself once per step (:meth:`sum_grads`: its ranks run different numbers of backward
passes) on full replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# DUET_TRAIN_FAULT="kill:RANK:STAGE:STEP": that rank SIGKILLs itself when it reaches that step of that stage,
# in the first attempt only (torchrun's restart count is 0), so that a run with a killed rank can be tested.
FAULT_ENV = "DUET_TRAIN_FAULT"
# How long the other ranks wait for rank 0's decision (:meth:`DistContext.decide`): exporting the 3B and playing
# the marked sessions on the CPU engine can take far longer than the training group's 5-minute timeout. A rank 0
# that dies meanwhile is seen by torchrun, which stops the others and restarts the group; this only bounds a
# rank 0 that hangs.
DECIDE_TIMEOUT_HOURS = 6
STOP, ABORT = 0, -1  # decisions that are not a step to train to
IN_WORKER_ENV = "TORCHELASTIC_RUN_ID"  # torchrun sets it in every worker it starts


@dataclass
class DistContext:
    """Where this process stands in the job: rank, world size and the device it trains on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str = ""
    decisions: Any = None  # a client of torchrun's store with a long timeout, for :meth:`decide`
    _decided: int = 0  # how many decisions so far (each is a key of its own)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share of one step's items: every ``world``-th, starting at ``rank`` (order kept)."""
        return list(items[self.rank::self.world])

    def check_divides(self, what: str, n: int) -> None:
        """Refuse a batch that the ranks cannot split evenly (the global batch must not change with N)."""
        if self.enabled and n % self.world:
            from app.trainer.jobs import EXIT_BAD_INPUT, JobError

            ok = [k for k in range(2, n + 1) if n % k == 0]
            raise JobError("config", f"{what} = {n} cannot be split evenly over {self.world} processes: each "
                           "takes the same share of every step so that the result does not depend on their number",
                           f"use --gpus {' or '.join(map(str, ok)) or 1}, or --set {what}={n + self.world - n % self.world}",
                           code=EXIT_BAD_INPUT)

    def wrap(self, model: Any, *, lora: bool, fsdp: str = "auto") -> Any:
        """The model that trains: ``model`` itself in one process; with several ranks, ``model`` sharded in place
        by FSDP2 for a full fine-tune (``fsdp`` auto/on, app/trainer/fsdp.py), else DDP around it (LoRA, or off)."""
        if not self.enabled:
            return model
        from app.trainer import fsdp as fsdp_mod

        if fsdp_mod.wanted(fsdp, world=self.world, lora=lora):
            return fsdp_mod.shard(model, self.device, self.world)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, wrapped: Any, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradient accumulation: DDP reduces only on the last backward of a step (FSDP reduce-scatters each one,
        so that no rank holds a whole gradient)."""
        if self.enabled and not last:
            from app.trainer.fsdp import is_sharded

            if not is_sharded(wrapped):
                return wrapped.no_sync()
        return contextlib.nullcontext()

    def join(self, wrapped: Any) -> contextlib.AbstractContextManager[Any]:
        """DDP's uneven-inputs mode: ranks may run different numbers of backward passes (GRPO's rollouts)."""
        if self.enabled:
            return wrapped.join()
        return contextlib.nullcontext()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over every rank (float64), e.g. losses or token counts to report."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(x) for x in t.cpu()]

    def sum_tensor(self, t: Any) -> Any:
        """``t`` summed over every rank (a float64 CPU tensor back); how GRPO gathers the rewards."""
        if not self.enabled:
            return t
        import torch.distributed as dist

        x = t.to(self._comm_device())
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x.cpu()

    def sum_grads(self, params: Sequence[Any]) -> None:
        """Sum every parameter's gradient over the ranks, in one all-reduce (GRPO's step; DDP's job in SFT).

        GRPO's ranks train on different numbers of rollouts (those with a non-zero advantage), so DDP's
        per-backward hooks, which need the same backward passes on every rank, do not fit; this is the
        same sum once per optimizer step. A parameter that no rank gave a gradient keeps ``None``, as in
        one process (AdamW then leaves it alone).
        """
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        dev = self._comm_device()
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dev, torch.float32)
                 for p in params]
        had = torch.tensor([1.0 if p.grad is not None else 0.0 for p in params], device=dev)
        flat = torch.cat([*parts, had])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for k, p in enumerate(params):
            n = p.numel()
            if float(flat[-len(params) + k]) > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(p.device, p.dtype).clone()
            else:
                p.grad = None
            offset += n

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank has it: a stop request must end every rank at the same step."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others: it generates the shared files (synthetic videos) they then read."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def decide(self, main: Callable[[], int]) -> int:
        """Rank 0 runs ``main`` (long work of its own, e.g. export + verify) and every rank returns its result.

        The result is a step (> 0) or :data:`STOP`. The others wait for it on torchrun's key-value store (a
        client with a timeout of :data:`DECIDE_TIMEOUT_HOURS`), not in a collective, which would time out after
        the training group's minutes; keys are named by the attempt (:func:`attempt_store`) and the call, so a
        restarted group never reads an earlier attempt's decision. Should ``main`` raise, rank 0
        first tells the others (:data:`ABORT`), which then stop as cancelled (``Cancelled``: exit 0 under
        torchrun, so that rank 0's own status, written for the launcher, is the job's) and rank 0 re-raises.
        """
        if not self.enabled:
            return int(main())
        import datetime

        if self.decisions is None:
            self.decisions = attempt_store(datetime.timedelta(hours=DECIDE_TIMEOUT_HOURS), host=False)
            self._decided = 0
        self._decided += 1
        key = f"decide/{self._decided}"
        if self.is_main:
            try:
                value = int(main())
            except BaseException:
                self.decisions.set(key, str(ABORT))
                raise
            self.decisions.set(key, str(value))
            return value
        value = int(self.decisions.get(key))  # blocks until rank 0 sets it (or the long timeout)
        if value == ABORT:
            from app.trainer.jobs import Cancelled

            raise Cancelled()
        return value

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _comm_device(self) -> str:
        return self.device if self.backend == "nccl" else "cpu"

    def fault(self, stage: str, step: int) -> None:
        """The test hook (``DUET_TRAIN_FAULT``): die here without any clean-up, as a crashed GPU process does."""
        spec = os.environ.get(FAULT_ENV, "")
        if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            return
        kind, rank, at_stage, at_step = (spec.split(":") + ["", "", "", ""])[:4]
        if kind == "kill" and rank == str(self.rank) and at_stage == stage and at_step == str(step):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


_CTX = DistContext()


def context() -> DistContext:
    """This process's context (one rank of one, unless :func:`init_from_env` joined a torchrun group)."""
    return _CTX


def in_torchrun() -> bool:
    """Whether torchrun started this process (then it is a worker and must not launch again)."""
    return IN_WORKER_ENV in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(requested_device: str = "auto") -> DistContext:
    """Join the process group torchrun set up (env://): NCCL with one GPU per local rank, else gloo on the CPU."""
    global _CTX
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _CTX
    import datetime

    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = requested_device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        # A dead peer must fail the survivors in minutes (torchrun then restarts the group), not the default 30.
        timeout = datetime.timedelta(minutes=5)
        dist.init_process_group(backend, store=attempt_store(timeout, host=rank == 0), rank=rank, world_size=world,
                                timeout=timeout)
    _CTX = DistContext(rank, world, local, f"cuda:{local}" if cuda else "cpu", backend)
    return _CTX


def attempt_store(timeout: Any, *, host: bool) -> Any:
    """A client of torchrun's key-value store whose keys belong to this run and this attempt (restart) alone.

    torchrun keeps its store across the restarts of a group, and the plain ``env://`` rendezvous names its keys
    alike in every attempt: after a rank was killed, a restarted rank could read the address the dead rank had
    published and fail ("Gloo connectFullMesh failed … Connection refused": 3 of 5 restarts here, before this).
    Prefixing the keys with the run id and ``TORCHELASTIC_RESTART_COUNT`` gives each attempt its own.
    ``host``: this rank serves the store when torchrun's agent does not (``TORCHELASTIC_USE_AGENT_STORE``).
    """
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                         world_size=int(os.environ.get("WORLD_SIZE", "1")), is_master=host and not agent,
                         timeout=timeout, multi_tenant=True)
    run, attempt = os.environ.get(IN_WORKER_ENV, ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"duet/{run}/attempt-{attempt}/", base)


def shutdown() -> None:
    global _CTX
    if _CTX.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _CTX = DistContext()


def available_devices() -> list[dict[str, Any]]:
    """What the Train page offers: the CPU, and each CUDA GPU with its name and memory (``gpus`` = how many to use).

    ``[{"kind": "cpu", "name": "CPU", "gpus": 0}, {"kind": "cuda", "index": 0, "name": "NVIDIA H100", "memory_gib":
    79.2, "gpus": 1}, …]``; a machine with k GPUs offers ``--gpus`` 1..k. Without PyTorch (the installed app before
    its training runtime is set up) only the CPU is listed.
    """
    out: list[dict[str, Any]] = [{"kind": "cpu", "name": "CPU", "gpus": 0}]
    try:
        import torch
    except ImportError:
        return out
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"kind": "cuda", "index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "gpus": i + 1})
    return out


def torchrun_command(nproc: int, worker_args: Sequence[str], *, max_restarts: int = 1,
                     python: str | None = None) -> list[str]:
    """The torchrun command line that runs ``app.trainer.cli WORKER_ARGS`` in ``nproc`` processes on this machine.

    ``--standalone`` lets torchrun pick a free local rendezvous port (several jobs on one machine do not
    collide); ``--max-restarts`` is how many times the whole group is restarted after a worker dies.
    """
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "app.trainer.cli", *worker_args]


def strip_gpus(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--gpus N`` / ``--gpus=N`` / ``--max-restarts …`` (the workers must not launch again)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--gpus", "--max-restarts"):
            skip = True
            continue
        if a.startswith(("--gpus=", "--max-restarts=")):
            continue
        out.append(a)
    return out


EXIT_FILE = ".torchrun-exit.json"


def write_exit_code(out: Path, code: int) -> None:
    """Rank 0's outcome for the launcher (the workers exit 0 for outcomes a restart cannot change)."""
    from app.core.atomic import write_json_atomic

    write_json_atomic(Path(out) / EXIT_FILE, {"code": int(code)})


def launch(nproc: int, worker_args: Sequence[str], out: Path, *, max_restarts: int = 1) -> int:
    """Run ``app.trainer.cli WORKER_ARGS`` under torchrun in ``nproc`` processes; the job's exit status.

    The launcher removes a stale ``CANCEL`` file (a restarted worker must not), records itself in
    ``<out>/job.json`` (so the Train page finds the job, and cancels it with the ``CANCEL`` file as any
    other), forwards SIGTERM/SIGINT to torchrun, and returns rank 0's own exit code (2 bad input,
    3 out of memory, 130 cancelled) rather than torchrun's 1 for any failure.
    """
    import subprocess
    import time

    from app.core.atomic import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "CANCEL").unlink(missing_ok=True)
    (out / EXIT_FILE).unlink(missing_ok=True)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (repo, os.environ.get("PYTHONPATH", "")) if x)}
    cmd = torchrun_command(nproc, worker_args, max_restarts=max_restarts)
    proc = subprocess.Popen(cmd, env=env, cwd=os.getcwd())
    try:
        known = json.loads((out / "job.json").read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        known = False
    if not known:  # started from a terminal; the Train page's JobProcess.start records the launcher itself
        write_json_atomic(out / "job.json", {"pid": os.getpid(), "argv": [sys.executable, *sys.argv],
                                             "started": time.time(), "gpus": nproc})
    with forwarding_signals(proc):
        rc = proc.wait()
    try:
        return int(json.loads((out / EXIT_FILE).read_text())["code"])
    except (OSError, ValueError, KeyError, TypeError):
        return rc if rc >= 0 else 128 - rc  # no outcome from rank 0: torchrun's (every restart failed)


@contextlib.contextmanager
def forwarding_signals(proc: Any) -> Iterator[None]:
    """While torchrun runs, SIGTERM/SIGINT to the launcher reach it (it stops the workers, which checkpoint)."""
    old: dict[int, Any] = {}

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):
            old[sig] = signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
