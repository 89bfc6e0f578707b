"""The version Duet reports (``duet --version``, About) and where a newer one can be had.

The number lives in ``app/__init__.py`` (frozen builds carry no package metadata to query) and must
equal ``pyproject.toml``'s (a test checks). Duet never checks for updates over the network by itself
(nothing leaves the machine unless the user asks): it tells the user where to look.
"""

from __future__ import annotations

import platform
import sys

from app import __version__

# Where releases (installers for each platform) are published. A distributor may override it at
# build time with DUET_RELEASES_URL in the environment of the running app.
RELEASES_URL = "https://github.com/duet-assistant/duet/releases"


def releases_url() -> str:
    import os

    return os.environ.get("DUET_RELEASES_URL") or RELEASES_URL


def version_text() -> str:
    """One paragraph for ``--version`` and the About box."""
    from app.core.assets import is_frozen

    build = "installed app" if is_frozen() else "from source"
    return (f"Duet {__version__} ({build}, Python {platform.python_version()}, {sys.platform})\n"
            f"Newer versions: {releases_url()}")
