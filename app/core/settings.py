"""The user's settings: one flat TOML file in the platform's config directory.

Why flat dataclasses instead of a settings framework: every field has a default that works, so a
missing, old or hand-edited file can always be read field by field; a value of the wrong type, or
outside the range the same setting has as a flag (``interval = nan``, ``frames_per_turn = 99``,
``opacity = -4``; ranges in :mod:`app.core.config`), falls back to its default and is reported
(:attr:`SettingsStore.problems`, shown by the window) instead of stopping the app later. A file that
is not TOML at all is set aside (``settings.corrupt-<time>.toml``) so the user can recover it, and
defaults take its place.
Writes go through :mod:`app.core.atomic`: a crash mid-save never leaves half a file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

try:  # Python ≥ 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from app.core.atomic import write_text_atomic
from app.core.bounded import read_regular_text
from app.core.config import APP_LIMITS, BackendSettings, Limit, SessionConfig, default, limit
from app.core.errors import SettingError
from app.core.formats import KEY as FORMAT_KEY
from app.core.formats import SETTINGS_FORMAT, upgrade

log = logging.getLogger("duet.settings")
FILE_NAME = "settings.toml"
MAX_BYTES = 1 << 20  # a settings file is a few KB: a larger one (or a FIFO, a device) is not read
# [section] key → its valid range: the session's from its flags (SessionConfig), the rest from APP_LIMITS.
LIMITS: dict[tuple[str, str], Limit] = {
    **{("session", name): limit(SessionConfig, name)
       for name in ("interval", "frames_per_turn", "talkativeness")},
    **{("session", name): limit(BackendSettings, name) for name in ("n_ctx", "n_threads")},
    **APP_LIMITS,
}


@dataclass
class SessionSettings:
    source: str = "screen"  # a source spec as app.capture.parse understands it
    model: str = "demo"  # a library name, "demo" or a GGUF path ("tiny": tests only, see app/ui/model_choice)
    interval: float = default(SessionConfig, "interval")  # defaults and ranges: app.core.config
    frames_per_turn: int = default(SessionConfig, "frames_per_turn")
    talkativeness: float = default(SessionConfig, "talkativeness")
    gpu: int = -1  # the GPU llama.cpp runs on (its number in `duet models recommend`); -1 = llama.cpp's choice
    n_ctx: int = default(BackendSettings, "n_ctx")  # the engine's context window, as --n-ctx
    n_threads: int = default(BackendSettings, "n_threads")  # its CPU threads, as --threads (0 = automatic)


@dataclass
class SpeechSettings:
    muted: bool = False
    voice: str = ""  # pyttsx3 voice id; empty = the engine's default
    rate: int = 180  # words per minute
    stt_model: str = "base.en"  # whisper.cpp model name (ggml-<name>.bin)
    input_device: str = ""  # sounddevice device name; empty = system default


@dataclass
class OverlaySettings:
    visible: bool = True
    click_through: bool = False
    opacity: float = 0.85
    fade_seconds: float = 20.0
    font_size: int = 15
    x: int = -1  # -1 = place it at the bottom right of the primary screen
    y: int = -1
    width: int = 460
    height: int = 220


@dataclass
class ShortcutSettings:
    pause: str = "Ctrl+Shift+P"
    ask: str = "Ctrl+L"
    mute: str = "Ctrl+Shift+M"
    overlay: str = "Ctrl+Shift+O"
    talk: str = "Ctrl+Shift+Space"  # push-to-talk: press to record, press again to ask


@dataclass
class WindowSettings:
    x: int = -1
    y: int = -1
    width: int = 1280
    height: int = 800


@dataclass
class SetupSettings:
    first_run_done: bool = False  # the first-run wizard was shown (app/ui/first_run.py)


@dataclass
class Settings:
    session: SessionSettings = field(default_factory=SessionSettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    overlay: OverlaySettings = field(default_factory=OverlaySettings)
    shortcuts: ShortcutSettings = field(default_factory=ShortcutSettings)
    window: WindowSettings = field(default_factory=WindowSettings)
    setup: SetupSettings = field(default_factory=SetupSettings)

    def to_dict(self) -> dict[str, dict[str, object]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, problems: list[str] | None = None) -> Settings:
        """Field by field: unknown keys are ignored; a wrong type or a value out of range keeps that field's
        default, and what was replaced is logged and added to ``problems`` (for the window to say)."""
        out = cls()
        for section in fields(cls):
            raw = data.get(section.name)
            if not isinstance(raw, dict):
                continue
            target = getattr(out, section.name)
            for f in fields(target):
                if f.name not in raw:
                    continue
                fallback = getattr(target, f.name)
                label = f"[{section.name}] {f.name}"
                value = coerce_like(raw[f.name], fallback)
                problem = None
                if value is None:
                    problem = f"{label} = {raw[f.name]!r} is not {KIND_NAMES.get(type(fallback), 'valid')}"
                elif (section.name, f.name) in LIMITS:
                    try:
                        LIMITS[section.name, f.name].check(label, value)
                    except SettingError as e:
                        problem = str(e)
                if problem:
                    log.warning("settings: %s; using the default, %r", problem, fallback)
                    if problems is not None:
                        problems.append(f"{problem}; the default ({fallback!r}) is used")
                    continue
                setattr(target, f.name, value)
        return out


def coerce_like(value: object, default: object) -> object | None:
    """``value`` as the default's type, or None when it cannot honestly be one (bool is not an int here).

    Shared by the settings file and the trainer's recipes: both read hand-edited TOML.
    """
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None  # type: ignore[arg-type]
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, list):
        return value if isinstance(value, list) else None
    return value if default is None else None


KIND_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{s}"'


def to_toml(settings: Settings) -> str:
    """TOML for flat sections of str/int/float/bool; enough for this file, no writer dependency."""
    lines = ["# Duet settings. Edit while Duet is closed; unknown or malformed values fall back to defaults.",
             f"{FORMAT_KEY} = {SETTINGS_FORMAT}", ""]
    for section, values in settings.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(val)}" for key, val in values.items())
        lines.append("")
    return "\n".join(lines)


def default_config_dir() -> Path:
    env = os.environ.get("DUET_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("duet"))


class SettingsStore:
    """Loads and saves :class:`Settings` at ``directory/settings.toml``."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory else default_config_dir()
        self.path = self.directory / FILE_NAME
        self.recovered_from: Path | None = None  # where a corrupt file was moved, for the UI to mention
        self.format_backup: Path | None = None  # a copy of a file of another format version, kept as it was
        self.problems: list[str] = []  # values replaced by their defaults on the last load, for the window

    def load(self) -> Settings:
        self.problems = []
        if not self.path.exists():
            return Settings()
        try:
            data = tomllib.loads(read_regular_text(self.path, MAX_BYTES))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            aside = self.path.with_name(f"settings.corrupt-{int(time.time())}.toml")
            try:
                os.replace(self.path, aside)
                self.recovered_from = aside
            except OSError:
                log.exception("could not move the corrupt settings file aside")
            log.warning("settings file %s is unreadable (%s); moved to %s, using defaults", self.path, e, aside)
            return Settings()
        up = upgrade("settings", data)
        if up.found != up.current:
            self._keep_copy(up.found, up.newer)
        return Settings.from_dict(up.data, self.problems)

    def _keep_copy(self, found: int, newer: bool) -> None:
        """Copy a file of another format aside once (``settings.format-<N>.toml``) before it is rewritten."""
        import shutil

        aside = self.path.with_name(f"settings.format-{found}.toml")
        try:
            if not aside.exists():
                shutil.copy2(self.path, aside)
            self.format_backup = aside
        except OSError:
            log.exception("could not keep a copy of %s", self.path)
        log.warning("settings file %s has format %d (this Duet writes %d)%s; a copy is kept at %s", self.path,
                    found, SETTINGS_FORMAT, ", read what this version knows" if newer else ", migrated", aside)

    def save(self, settings: Settings) -> None:
        write_text_atomic(self.path, to_toml(settings))
