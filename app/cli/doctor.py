"""``duet doctor [--json] [--quick]``: can this computer run Duet, and what fixes what cannot.

Prints one line a check (``✓`` fine, ``✗`` a problem, ``–`` not applicable or a warning), each problem
followed by its fix, and exits 1 when any check failed, so CI and a support script can use it as is.
The checks live in :mod:`app.doctor` (the About dialog and the first-run wizard show the same ones).
``--child-probe`` is the doctor's own child process (:mod:`app.doctor.probe`), not for users.
"""

from __future__ import annotations

import argparse
import json


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this computer: CPU, GPU, llama.cpp, the demo model, sound, camera, screen",
                       description="Check what Duet needs on this computer; each problem comes with its fix. "
                                   "Exit status 1 when a check failed.")
    p.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    p.add_argument("--quick", action="store_true", help="skip the demo model's one-step run")
    p.add_argument("--child-probe", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(a: argparse.Namespace) -> int:
    if a.child_probe:
        from app.doctor.probe import main as probe_main

        return probe_main(quick=a.quick)
    from app.doctor.checks import failed, format_check, run_checks

    checks = run_checks(quick=a.quick)
    if a.json:
        print(json.dumps([c.to_json() for c in checks], indent=2, ensure_ascii=False))
    else:
        for c in checks:
            for line in format_check(c):
                print(line)
    return 1 if failed(checks) else 0
