"""``python -m app`` and the frozen app's entry point: the ``duet`` command."""

import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    # A frozen app is its own interpreter: the helper processes multiprocessing starts (the resource tracker
    # that owns the engine's shared-memory frames) re-run this executable and are dispatched here.
    multiprocessing.freeze_support()
    sys.exit(main())
