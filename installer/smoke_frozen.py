"""Smoke test of the frozen app as a new user meets it (``make smoke``, run by CI after ``make package``).

With fresh, empty user folders (HOME and XDG_* in a temporary directory, no DUET_* variables):

1. ``duet --version`` names the version and where to get a newer one;
2. the frozen app makes a synthetic clip (``duet eval make-synthetic``) and
   ``duet run --source CLIP --fast`` narrates it with the demo model bundled in the app — nothing
   trained, nothing downloaded — and at least one reply is printed;
3. the GUI starts under Xvfb and draws its window: the X server lists a top-level window named
   "Duet", and a screenshot of the screen is not blank (it is saved for people to look at);
4. with ``--deb``: the .deb unpacked into a scratch root (``dpkg -x``) runs from there (steps 1–2);
5. portability (x86-64 with qemu-user): the same narration with the model's engine, the process that loads
   llama.cpp, on an emulated Haswell (AVX2) and an emulated Nehalem (SSE4.2) CPU, each picking the CPU
   library it can run. A build carrying the building machine's instruction set (-march=native on an
   AVX-512 machine) dies there with SIGILL, so this check fails for it.

Exit status 0 when every check passed; each failure prints what was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Tell me when a new shape appears."


def fresh_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUET_", "XDG_", "PYTHON", "QT_"))}
    for sub in ("config", "data", "cache", "state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), XDG_STATE_HOME=str(home / "state"), HF_HUB_OFFLINE="1",
               APPDATA=str(home / "config"), LOCALAPPDATA=str(home / "data"))  # Windows' user folders
    return env


def check(ok: bool, what: str, seen: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        print(seen[-3000:], file=sys.stderr)
        raise SystemExit(1)


def cli_checks(exe: Path, work: Path, label: str) -> None:
    env = fresh_env(work / f"home-{label}")
    t0 = time.monotonic()
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, timeout=120)
    check(r.returncode == 0 and "Duet " in r.stdout and "Newer versions:" in r.stdout,
          f"{label}: --version → {r.stdout.splitlines()[0] if r.stdout else '?'}", r.stdout + r.stderr)
    clips = work / f"clips-{label}"
    r = subprocess.run([str(exe), "eval", "make-synthetic", str(clips), "--families", "appear,colour",
                        "--difficulty", "easy", "--per-family", "1", "--seed", "7"],
                       capture_output=True, text=True, env=env, timeout=300)
    clip = clips / "videos" / "appear-easy-000.avi"
    check(r.returncode == 0 and clip.is_file(), f"{label}: made a synthetic clip {clip.name}", r.stdout + r.stderr)
    r = subprocess.run([str(exe), "run", "--source", str(clip), "--fast", "--ask", QUESTION],
                       capture_output=True, text=True, env=env, timeout=600)
    replies = [ln for ln in r.stdout.splitlines() if re.match(r"\[\d\d:\d\d\] (?!\(you\))", ln)]
    check(r.returncode == 0 and bool(replies),
          f"{label}: run --source CLIP --fast with the bundled demo model: {len(replies)} repl(ies), "
          f"first {replies[0] if replies else None!r} ({time.monotonic() - t0:.0f} s)", r.stdout + r.stderr)
    lib = Path(env["XDG_DATA_HOME"]) / "duet" / "models" / "library.json"
    check(not lib.exists(), f"{label}: nothing was written into the user's model library")
    r = subprocess.run([str(exe), "doctor", "--json"], capture_output=True, text=True, env=env, timeout=300)
    try:
        checks = {c["name"]: c for c in json.loads(r.stdout)}
    except ValueError:
        checks = {}
    cpu, step = checks.get("CPU", {}), checks.get("Demo model", {})
    check(cpu.get("ok") is True and step.get("ok") is True,
          f"{label}: doctor: {cpu.get('detail', '?').split(';')[0]}; {step.get('detail', '?')}", r.stdout + r.stderr)


# QEMU's names for the CPUs checked, and the ggml CPU library each must choose.
EMULATED_CPUS = {"Haswell-v4": "haswell", "Nehalem": "sse42"}


def emulated_checks(exe: Path, work: Path) -> None:
    """Narrate with the engine's process under qemu-user as an older CPU (see the module docstring)."""
    qemu = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
    check(qemu is not None, "qemu-user is installed for the portability check", "apt-get install qemu-user")
    exe = exe.resolve()
    # PyInstaller's bootloader restarts itself once with these variables set (seen with strace -e execve on
    # PyInstaller 6.22); a process restarted under qemu-user would leave the emulator and run natively, so the
    # emulated process starts with them and goes straight on.
    pyi = {"_PYI_ARCHIVE_FILE": str(exe), "_PYI_PARENT_PROCESS_LEVEL": "-1", "_PYI_LINUX_PROCESS_NAME": "duet",
           "LD_LIBRARY_PATH": str(exe.parent / "_internal")}
    clip = next((work / "clips-frozen" / "videos").glob("appear-easy-000.avi"))
    for cpu, library in EMULATED_CPUS.items():
        env = fresh_env(work / f"home-{cpu}")
        env["DUET_ENGINE_LAUNCHER"] = shlex.join(
            [qemu, "-cpu", cpu, *[x for k, v in pyi.items() for x in ("-E", f"{k}={v}")]])
        t0 = time.monotonic()
        r = subprocess.run([str(exe), "-v", "INFO", "run", "--source", str(clip), "--fast", "--ask", QUESTION],
                           capture_output=True, text=True, env=env, timeout=1800)
        replies = [ln for ln in r.stdout.splitlines() if re.match(r"\[\d\d:\d\d\] (?!\(you\))", ln)]
        chosen = re.search(r"CPU library (\S+)", r.stderr)
        check(r.returncode == 0 and bool(replies) and chosen is not None and chosen.group(1) == library,
              f"emulated {cpu}: the engine chose the {chosen.group(1) if chosen else '?'} CPU library and narrated "
              f"{len(replies)} repl(ies), first {replies[0] if replies else None!r} ({time.monotonic() - t0:.0f} s)",
              r.stdout + r.stderr)


def free_display() -> int:
    for n in range(70, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise SystemExit("no free X display number")


def gui_check(exe: Path, work: Path, shot: Path) -> None:
    import mss
    import numpy as np
    from PIL import Image

    n = free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                break
            time.sleep(0.1)
        env = fresh_env(work / "home-gui")
        env.update(DISPLAY=f":{n}", QT_QPA_PLATFORM="xcb")
        log = open(work / "gui.log", "w")  # noqa: SIM115 - closed below
        # Past the first-run wizard (tested by tests/ui/test_first_run.py) to the main window itself.
        app = subprocess.Popen([str(exe), "gui", "--no-first-run"], env=env, stdout=log, stderr=subprocess.STDOUT)
        tree, deadline = "", time.monotonic() + 120
        while time.monotonic() < deadline and app.poll() is None:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True,
                                  env={**env}).stdout
            if re.search(r'"Duet"', tree):
                break
            time.sleep(1)
        check(app.poll() is None and '"Duet"' in tree, "GUI: a top-level window named \"Duet\" is mapped",
              tree + (work / "gui.log").read_text(errors="replace"))
        time.sleep(4)  # let it paint
        os.environ["DISPLAY"] = f":{n}"
        with (getattr(mss, "MSS", None) or mss.mss)() as sct:  # mss ≥10.2 renamed the factory
            grab = sct.grab(sct.monitors[1])
        img = Image.frombytes("RGB", grab.size, grab.rgb)
        shot.parent.mkdir(parents=True, exist_ok=True)
        img.save(shot)
        a = np.asarray(img).reshape(-1, 3)
        distinct = len(np.unique(a[:: 97], axis=0))
        check(a.std() > 10 and distinct > 20, f"GUI: screenshot is not blank (std {a.std():.1f}, "
              f"{distinct} distinct colours sampled) → {shot}")
    finally:
        if app is not None:
            app.terminate()
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                app.kill()
        xvfb.terminate()
        xvfb.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", type=Path, default=REPO / "dist" / "duet" / "duet")
    ap.add_argument("--deb", type=Path, help="also unpack this .deb into a scratch root and run it from there")
    ap.add_argument("--shot", type=Path, default=REPO / "out" / "smoke" / "frozen_gui.png")
    ap.add_argument("--no-gui", action="store_true")
    ap.add_argument("--no-emulation", action="store_true", help="skip the emulated-CPU check (qemu-user)")
    a = ap.parse_args()
    check(a.app.is_file(), f"frozen app at {a.app}", "run `make package` first")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="duet-smoke-") as tmp:
        work = Path(tmp)
        cli_checks(a.app, work, "frozen")
        if not a.no_emulation and sys.platform.startswith("linux") and os.uname().machine == "x86_64":
            emulated_checks(a.app, work)
        if not a.no_gui:
            gui_check(a.app, work, a.shot)
        if a.deb:
            root = work / "root"
            subprocess.run(["dpkg-deb", "-x", str(a.deb), str(root)], check=True)
            check((root / "usr/share/applications/duet.desktop").is_file(), ".deb: desktop entry installed")
            check((root / "usr/share/icons/hicolor/256x256/apps/duet.png").is_file(), ".deb: icons installed")
            cli_checks(root / "usr" / "bin" / "duet", work, "deb")
            shutil.rmtree(root, ignore_errors=True)
    print(f"smoke test passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
