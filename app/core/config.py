"""Every stream and engine setting, its default and its valid range, in one place.

:class:`SessionConfig` is what one watching session runs with (pace, frames, reply length, how
talkative, how long); :class:`BackendSettings` is how the in-process engine is started (context
size, threads, GPU layers). The CLIs, the eval runner, the GUI worker and the settings dialog all
take their defaults, ranges and help text from here (:func:`limit`, :func:`cli_type`), so a value
accepted in one place is accepted everywhere and a bad one is refused at entry with the range in
the message (``--n-ctx 16`` is an error here, not a llama.cpp abort later).

Why these ranges:

- ``interval`` 0.1–60 s: the paper samples at 1 s; below 0.1 s no CPU keeps up, above a minute it
  is no longer commentary.
- ``frames_per_turn`` 1–4: the model was trained on 2 frames a turn; 1 answers faster, 3–4 are
  tolerated by the protocol (docs/protocol.md §1.3).
- ``tokens_per_frame`` 4–1024: 128 as trained; the resize keeps the aspect ratio within the budget.
- ``talkativeness`` −50…50: a logit bias on speaking at the first token; ±50 already decides every step.
- ``max_new_tokens`` 1–1024: replies are a sentence or two; 0 would mean "never say anything".
- ``max_turns`` 0–10⁹: 0 means explicitly "until the source ends".
- ``n_ctx`` 256–131072: below 256 not even the system prompt and one small turn fit; a window too small
  for one turn at the chosen tokens per frame is refused at the first step with the cells it needs
  (docs/llamacpp.md §Context); Qwen2.5-VL's trained window is 128 Ki.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from app.core.errors import SettingError
from app.core.protocol import (
    DEFAULT_FRAMES_PER_TURN,
    DEFAULT_INTERVAL_S,
    DEFAULT_TOKENS_PER_FRAME,
    SYSTEM_PROMPT,
)

T = TypeVar("T")
# A reply's longest length: the session's default, and a backend's when a caller (a test, a bench) names none.
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class Limit:
    """A setting's valid closed range, its unit and a one-line help text."""

    low: float
    high: float
    help: str
    unit: str = ""

    def check(self, name: str, value: Any, *, flag: str | None = None) -> None:
        """Raise :class:`SettingError` unless ``value`` is a finite number within the range."""
        label = flag or name
        is_int = isinstance(self.low, int) and isinstance(self.high, int)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(f"{label} must be a number ({self.describe()}), got {value!r}")
        if is_int and not float(value).is_integer():
            raise SettingError(f"{label} must be a whole number ({self.describe()}), got {value!r}")
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise SettingError(f"{label} must be within {self.describe()}, got {value!r}")

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_num(self.low)} to {_num(self.high)}{unit}"


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def setting(default: Any, low: float, high: float, help: str, unit: str = "") -> Any:  # noqa: A002
    """A numeric settings field: its default, its valid range, its help (flags and controls derive from it)."""
    return field(default=default, metadata={"limit": Limit(low, high, help, unit)})


def _option(default: str, help: str, *, choices: tuple[str, ...] | None = None,  # noqa: A002
            metavar: str | None = None) -> Any:
    """A setting that is a word, not a number: its help (and choices) for the flag generated from it."""
    return field(default=default, metadata={"option": {"help": help, "choices": choices, "metavar": metavar}})


def validate_limits(obj: object) -> None:
    for f in fields(obj):  # type: ignore[arg-type]
        lim = f.metadata.get("limit")
        if lim is not None:
            lim.check(f.name, getattr(obj, f.name))


CADENCES = ("keep", "live")


@dataclass
class SessionConfig:
    """How one session watches and talks. Validated on creation: a bad value never reaches the model."""

    interval: float = setting(DEFAULT_INTERVAL_S, 0.1, 60.0, "seconds between frames (paper: 1 s)", "s")
    frames_per_turn: int = setting(DEFAULT_FRAMES_PER_TURN, 1, 4,
                                    "frames the model sees before each decision (trained on 2)")
    tokens_per_frame: int = setting(DEFAULT_TOKENS_PER_FRAME, 4, 1024,
                                     "visual tokens per frame (trained on 128)", "tokens")
    talkativeness: float = setting(0.0, -50.0, 50.0, "bias towards speaking (0 = as trained)")
    max_new_tokens: int = setting(DEFAULT_MAX_NEW_TOKENS, 1, 1024, "longest reply", "tokens")
    max_turns: int = setting(0, 0, 10**9, "stop after N turns (0 = until the source ends)", "turns")
    # When a step takes longer than the turn (app/engine/cadence.py).
    cadence: str = _option("keep", "slower than real time: keep every frame, or stay live (skip stale frames, "
                           "fewer tokens/frame)", choices=CADENCES)
    min_tokens_per_frame: int = setting(32, 4, 1024, "the lowest tokens per frame the live cadence may use",
                                         "tokens")
    system_prompt: str = SYSTEM_PROMPT

    def __post_init__(self) -> None:
        validate_limits(self)
        if self.cadence not in CADENCES:
            raise SettingError(f"cadence must be one of {', '.join(CADENCES)}, got {self.cadence!r}")

    @property
    def seconds_per_turn(self) -> float:
        """How often the model decides whether to speak."""
        return self.interval * self.frames_per_turn




@dataclass(frozen=True)
class BackendSettings:
    """How the engine starts: the fields a user sets (flags, settings.toml, the window), each declared once.

    Frozen: the same object goes from the flag or control to the engine (through its process, as JSON),
    changed only with ``dataclasses.replace``. The engine's own knobs extend it
    (:class:`app.engine.llama_backend.LlamaSettings`) without declaring these again.
    ``n_threads`` 0 means the one policy in :func:`resolve_threads`.
    """

    n_ctx: int = setting(8192, 256, 131072, "context window", "tokens")
    n_threads: int = setting(0, 0, 1024, "CPU threads (0 = automatic)")
    n_gpu_layers: int = setting(-1, -1, 10_000, "layers on the GPU (-1 = all, 0 = CPU only)")
    flash_attn: str = _option("auto", "auto (default): llama.cpp's choice on a GPU; on the CPU off for the text "
                              "model and on for the vision encoder, the faster way for each there "
                              "(docs/benchmarks.md)", choices=("auto", "on", "off"))
    # Which of llama.cpp's CPU libraries the engine loads (app/modelhub/llama_lib.py).
    cpu_variant: str = _option("auto", "llama.cpp's CPU library: auto (the best this CPU runs; `duet doctor` names "
                               "it) or one by name, e.g. x64 (any x86-64), after a crash in a faster one",
                               metavar="NAME")
    # The one GPU the engine may use, as `duet models recommend` numbers them; -1: llama.cpp's choice (all of them).
    gpu: int = setting(-1, -1, 63, "run on this GPU only (its number in `duet models recommend`; -1 = automatic)")

    def __post_init__(self) -> None:
        validate_limits(self)
        choices = option(BackendSettings, "flash_attn")["choices"]
        if self.flash_attn not in choices:
            raise SettingError(f"flash_attn must be one of {', '.join(choices)}, got {self.flash_attn!r}")
        if not self.cpu_variant or not all(c.isalnum() or c in "._" for c in self.cpu_variant):
            raise SettingError(f"cpu_variant must be 'auto' or a CPU library name such as x64 or haswell, "
                               f"got {self.cpu_variant!r}")


# The app's own settings that have no command-line flag (settings.toml, the settings dialog's spin boxes),
# by [section] and key of settings.toml: the same form, so the file and the dialog accept the same values.
APP_LIMITS: dict[tuple[str, str], Limit] = {
    ("overlay", "opacity"): Limit(0.2, 1.0, "the overlay's background opacity"),
    ("overlay", "fade_seconds"): Limit(3.0, 300.0, "seconds before a reply on the overlay fades", "s"),
    ("overlay", "font_size"): Limit(9, 40, "the overlay's text size", "pt"),
    ("speech", "rate"): Limit(80, 400, "speaking rate", "words/min"),
    ("session", "gpu"): Limit(-2, 63, "the GPU the model runs on: its number, -1 automatic, -2 CPU only"),
}


def limit(cls: type, name: str) -> Limit:
    """The :class:`Limit` of ``cls.name`` (``limit(SessionConfig, "interval")``)."""
    for f in fields(cls):
        if f.name == name and "limit" in f.metadata:
            return f.metadata["limit"]
    raise KeyError(f"{cls.__name__}.{name} has no limit")


def default(cls: type, name: str) -> Any:
    """The default of ``cls.name`` as declared above."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name}")


def cli_type(cls: type, name: str, flag: str) -> Any:
    """An argparse ``type=`` that parses and range-checks ``flag`` against ``cls.name``'s limit."""
    import argparse

    lim = limit(cls, name)
    is_int = isinstance(lim.low, int) and isinstance(lim.high, int)

    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text) if is_int else float(text)
        except ValueError:
            kind = "a whole number" if is_int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind} ({lim.describe()})") from None
        try:
            lim.check(name, value, flag=flag)
        except SettingError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = flag  # argparse names the type in its message
    return parse


def cli_help(cls: type, name: str) -> str:
    lim = limit(cls, name)
    return f"{lim.help}; {lim.describe()}, default {default(cls, name)!s}"


BACKEND_FLAGS = {"n_ctx": "--n-ctx", "n_threads": "--threads", "n_gpu_layers": "--gpu-layers", "gpu": "--gpu"}

# The window's GPU choice, settings.toml's ``[session] gpu``: a GPU's number, or one of these.
GPU_AUTO = -1  # llama.cpp's choice (every GPU it can use; the CPU when there is none)
GPU_CPU_ONLY = -2  # no layer on any GPU (as --gpu-layers 0)


def backend_for_gpu(choice: int, base: BackendSettings | None = None) -> BackendSettings:
    """The BackendSettings that the window's GPU choice means: the same fields ``--gpu N`` and
    ``--gpu-layers 0`` set for `duet run` and `duet serve`, so the three read one choice one way."""
    import dataclasses

    base = base or BackendSettings()
    if choice == GPU_CPU_ONLY:
        return dataclasses.replace(base, gpu=GPU_AUTO, n_gpu_layers=0)
    return dataclasses.replace(base, gpu=choice)


def option(cls: type, name: str) -> dict[str, Any]:
    """The help, choices and metavar of ``cls.name``, a setting that is a word (:func:`_option`)."""
    for f in fields(cls):
        if f.name == name and "option" in f.metadata:
            return f.metadata["option"]
    raise KeyError(f"{cls.__name__}.{name} is not a word setting")


def add_arguments(parser: Any, cls: type, names: tuple[str, ...], flags: dict[str, str] | None = None) -> None:
    """Add ``--flag`` options for ``cls`` fields to an argparse parser or group, each with the field's
    default, range-checked type (or choices) and help; ``flags`` renames the flag (``n_ctx`` → ``--n-ctx``),
    never the value's name: it lands in ``namespace.n_ctx``, so :func:`from_args` needs no map back."""
    for name in names:
        flag = (flags or {}).get(name) or "--" + name.replace("_", "-")
        meta = next(f.metadata for f in fields(cls) if f.name == name)
        if "option" in meta:
            o = meta["option"]
            parser.add_argument(flag, dest=name, default=default(cls, name), choices=o["choices"],
                                metavar=o["metavar"], help=o["help"])
        else:
            parser.add_argument(flag, dest=name, type=cli_type(cls, name, flag), default=default(cls, name),
                                help=cli_help(cls, name))


def from_args(cls: type[T], namespace: Any, **changes: Any) -> T:
    """``cls`` built from the flags :func:`add_arguments` added (fields without a flag keep their default)."""
    values = {f.name: getattr(namespace, f.name) for f in fields(cls) if hasattr(namespace, f.name)}
    return cls(**{**values, **changes})


def usable_cores() -> int:
    """CPU cores this process may run on (affinity and cgroup-pinned containers included)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int, *, leave_one_for_ui: bool = False) -> int:
    """The one thread policy: an explicit count wins; 0 means every usable core, less one when asked.

    A GUI whose model threads cannot be made to yield to it leaves one core free: with every core
    decoding at the window's priority, the event loop waits for the scheduler and the window stutters.
    Where they can (Linux: :func:`lower_compute_priority`), the GUI takes every core too: on 2 cores the
    3B shape then did 1.7× the steps with the same p99 event-loop gap, though two of four runs had one stall
    over 30 ms (docs/benchmarks.md §8).
    """
    if requested > 0:
        return requested
    cores = usable_cores()
    return max(1, cores - 1) if leave_one_for_ui else cores


_lowered = threading.local()  # this thread's priority was lowered already (a later model load must not lower it again)


def lower_compute_priority(step: int = 10) -> bool:
    """Make the calling thread, and every compute thread it starts afterwards, yield to the rest of the
    desktop: nice +``step`` (capped at 19), once per thread. Linux only, where a nice value is per thread and
    a new thread inherits its creator's, so llama.cpp's OpenMP workers, started later from this thread, get it
    too. False where it cannot (another OS, where ``setpriority`` would lower the whole process, window included).
    """
    if getattr(_lowered, "done", False):
        return True
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + step))
    except OSError:
        return False
    _lowered.done = True
    return True
