"""``python -m app.eval …`` runs ``duet eval …`` without the rest of the ``duet`` command."""

import sys

from app.eval.cli import main

sys.exit(main())
