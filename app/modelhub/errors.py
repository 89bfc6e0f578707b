"""The converter's error, in a module of its own so that the converter's parts (vocab, config) can raise it."""

from __future__ import annotations

from app.core.errors import InputError


class ConversionError(InputError):
    """The input cannot be converted; the message names the file and what is wrong."""
