"""Can a spoken reply actually reach the user's ears? Checked before speaking, not discovered per reply.

Why this exists: pyttsx3's espeak-ng driver (Linux) synthesises each line to a temporary WAV and
plays it with ``os.system("aplay …")``. With no ``aplay`` the shell prints ``aplay: not found`` on
the terminal for every reply and the user hears nothing, with no word in the window. So the path
is checked up front — the engine library, the player, a sound output — and the first thing
missing is named with the command that fixes it. docs/speech.md lists the same facts.

Only the output path is checked here; whether the engine starts is reported by
:class:`app.speech.tts.Speaker` itself (``unavailable``), because only creating it can tell.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

PLAYER = "aplay"  # what pyttsx3 2.9x's espeak driver runs on Linux (drivers/espeak.py)


def espeak_library(find: Callable[[str], str | None] = ctypes.util.find_library) -> str | None:
    """The espeak-ng (or espeak) library pyttsx3 would load, or None (``duet doctor`` names it)."""
    for name in ("espeak-ng", "espeak"):
        found = find(name)
        if found:
            return found
    return None


def sound_output(snd_dir: Path = Path("/dev/snd"), env: Mapping[str, str] | None = None) -> str | None:
    """A description of a sound output on Linux (an ALSA playback device or a sound server), or None."""
    env = os.environ if env is None else env
    if snd_dir.is_dir() and any(snd_dir.glob("pcmC*D*p")):
        return f"ALSA playback device in {snd_dir}"
    if env.get("PULSE_SERVER"):
        return f"PulseAudio server {env['PULSE_SERVER']}"
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        for name, what in (("pulse/native", "PulseAudio"), ("pipewire-0", "PipeWire")):
            if (Path(runtime) / name).exists():
                return f"{what} ({Path(runtime) / name})"
    return None


def speech_output_problem(*, platform: str = sys.platform,
                          which: Callable[[str], str | None] = shutil.which,
                          find_library: Callable[[str], str | None] = ctypes.util.find_library,
                          snd_dir: Path = Path("/dev/snd"),
                          env: Mapping[str, str] | None = None) -> str | None:
    """What stops replies from being heard, and how to fix it; None when the path looks complete.

    Only Linux is checked in depth: on Windows (SAPI) and macOS (NSSpeechSynthesizer) the system
    speech service plays through the default output itself.
    """
    if not platform.startswith("linux"):
        return None
    tail = " Until then replies are shown but not spoken (or turn Voice off)."
    if espeak_library(find_library) is None:
        return ("Voice is on, but the espeak-ng speech engine is not installed. Install it with "
                "`sudo apt install espeak-ng`." + tail)
    if which(PLAYER) is None:
        return (f"Voice is on, but Duet cannot play sound: the `{PLAYER}` program is missing. "
                "Install it with `sudo apt install alsa-utils`." + tail)
    if sound_output(snd_dir, env) is None:
        return ("Voice is on, but no sound output was found (no playback device in /dev/snd and no "
                "PulseAudio or PipeWire server). Connect speakers or headphones, or check that your "
                "user may use audio (`sudo usermod -aG audio $USER`, then log in again)." + tail)
    return None
