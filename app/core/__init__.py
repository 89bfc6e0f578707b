"""The vocabulary every other package shares: frames, turns, step results, the MMDuet2 protocol.

Nothing here imports Qt, llama.cpp or torch, so the same objects flow through the CLI, the GUI,
the benchmarks, evaluation and the trainer.
"""
