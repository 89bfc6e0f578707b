"""Turning frames and questions into MMDuet2 turns and replies: backends and the proactive session."""
