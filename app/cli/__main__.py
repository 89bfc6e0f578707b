"""``python -m app.cli``: the ``duet`` command (used by the model-pull job's child process)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
