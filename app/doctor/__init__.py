"""``duet doctor``: can this computer run Duet, and if not, what fixes it.

Issue 23 item 4. One list of :class:`Check` results, shared by the command line (``duet doctor``), the
About dialog and the first-run wizard, so a user, a bug report and CI all see the same words.

Why a package of its own: the checks reach across layers that may not import each other (the
llama.cpp engine, speech, screen capture, hardware detection), so they sit above all of them and below
the UI and the CLI (``pyproject.toml``'s import contracts). Like the rest of the core, they never import Qt.

Why a child process: loading llama.cpp can kill the process that loads it (an instruction this CPU
lacks is SIGILL, a broken driver SIGSEGV). The parts that touch llama.cpp run in
``duet doctor --child-probe`` (:mod:`app.doctor.probe`); the parent (:mod:`app.doctor.checks`) reads its
JSON and turns a child killed by a signal into a failed check that names the signal and what to do.
"""

from app.doctor.checks import Check, format_check, run_checks

__all__ = ["Check", "format_check", "run_checks"]
