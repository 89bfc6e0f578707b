"""Which models the Watch tab's drop-down offers, and which one is the default.

Why the tiny model is never offered: it has random weights, so it answers with gibberish ("green
green … greenyyyy"). It exists for the tests and for developers (``duet models tiny``); a user who
sees it first would think Duet is broken. Developers can still pick it: ``duet gui --model tiny``
selects it for that run, and ``DUET_DEV_MODELS=1`` lists it in the drop-down (the UI tests set it).

The default is the offline demo model when one can be found — in the user's library (``duet train
demo`` registers it) or bundled with the app (``app.core.assets``, when this build ships one).
With no usable model, :func:`no_model_message` says what to do instead of starting anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.core.assets import bundled_demo
from app.modelhub.library import ModelLibrary

TEST_MODEL = "tiny"
DEMO_MODEL = "demo"
DEV_ENV = "DUET_DEV_MODELS"


@dataclass(frozen=True)
class Choice:
    name: str  # the model reference the session resolves (library name, "demo", "tiny" or a path)
    label: str  # what the drop-down shows


def developer_mode() -> bool:
    """True when the environment asks for the developer-only test model to be listed."""
    return os.environ.get(DEV_ENV, "") not in ("", "0")


def demo_available(library: ModelLibrary) -> bool:
    """The demo model is in the library, or bundled with this build."""
    if library.get(DEMO_MODEL) is not None:
        return True
    try:
        return bundled_demo() is not None
    except OSError:
        return False


def offered(library: ModelLibrary, *, explicit: str = "") -> list[Choice]:
    """The drop-down's entries: demo first when present, then the user's own models.

    ``explicit`` is a model the user named for this run (``--model``): it is listed even when it is
    the test model or a path, because the user asked for exactly that.
    """
    out: list[Choice] = []
    if demo_available(library):
        out.append(Choice(DEMO_MODEL, "demo — offline demo model (trained on synthetic shapes)"))
    for e in library.entries():
        if e.name not in (DEMO_MODEL, TEST_MODEL):
            out.append(Choice(e.name, e.name))
    if developer_mode() or explicit == TEST_MODEL:
        out.append(Choice(TEST_MODEL, "tiny — random test model (developers only: gibberish)"))
    if explicit and all(c.name != explicit for c in out):
        out.append(Choice(explicit, explicit))
    return out


def pick_default(saved: str, choices: list[Choice]) -> str:
    """The saved model when it is still offered, else the first offered one, else "" (no model)."""
    names = [c.name for c in choices]
    if saved in names:
        return saved
    return names[0] if names else ""


def no_model_message() -> str:
    """What the window says when there is no usable model, instead of starting."""
    return ("No model yet. The offline demo model is not installed: build it with `duet train demo` "
            "(about 5 minutes on a CPU), or import a GGUF model and its mmproj on the Models tab. "
            "Then choose it under Model and press Start.")


def fill_combo(combo: object, library: ModelLibrary, saved: str, *, explicit: str = "") -> str:
    """Refill the Watch tab's QComboBox (item data = model reference); returns the selected reference.

    With nothing to offer, the box shows a disabled "No model yet" line so it is never blank.
    """
    from PySide6.QtWidgets import QComboBox

    assert isinstance(combo, QComboBox)
    current = combo.currentData() or saved
    choices = offered(library, explicit=explicit)
    combo.blockSignals(True)
    combo.clear()
    for c in choices:
        combo.addItem(c.label, c.name)
    chosen = pick_default(current, choices)
    if chosen:
        combo.setCurrentIndex(combo.findData(chosen))
        combo.setToolTip("")
    else:
        combo.addItem("No model yet — see the Models tab", None)
        combo.setCurrentIndex(0)
        combo.setToolTip(no_model_message())
    combo.blockSignals(False)
    return chosen
