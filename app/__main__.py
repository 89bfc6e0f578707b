"""``python -m app`` and the frozen app's entry point: the ``duet`` command."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
