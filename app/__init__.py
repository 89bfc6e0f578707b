"""Duet: a desktop assistant that watches with you (MMDuet2 on llama.cpp)."""

__version__ = "0.1.0"
