"""The session's tolerance of bad frames (a zero-size grab is dropped; the stream goes on)."""

from __future__ import annotations

import numpy as np

from app.core.types import Frame
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.session import ProactiveSession, SessionConfig


def test_session_drops_zero_size_frames_and_keeps_going(tiny_model):
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0)) as b:
        s = ProactiveSession(b, SessionConfig(frames_per_turn=2, tokens_per_frame=32))
        good = np.full((100, 120, 3), 128, np.uint8)
        frames = [Frame(good, 1.0), Frame(np.zeros((0, 120, 3), np.uint8), 2.0), Frame(good, 3.0)]
        results = [r for f in frames if (r := s.feed(f)) is not None]
        assert s.bad_frames == 1 and len(results) == 1
        assert results[0].video_time == 2.0  # two usable frames = one turn


def test_ticks_a_live_source_dropped_move_the_clock_with_the_world(tiny_model):
    """A live source hands over its newest tick and how many it missed while the model was busy: a reply's time
    is then that of the frames it saw (the GUI once stamped a reply 00:12 about the film's 00:39)."""
    interval = 3.0
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0)) as b:
        s = ProactiveSession(b, SessionConfig(interval=interval, frames_per_turn=2, tokens_per_frame=32))
        img = np.full((100, 120, 3), 128, np.uint8)
        ticks = [(1, 0), (2, 0), (12, 9), (13, 0), (15, 1), (17, 1)]  # (tick index, ticks missed before it)
        frames = [Frame(img, index * interval, index, dropped=dropped) for index, dropped in ticks]
        results = [r for f in frames if (r := s.feed(f)) is not None]
    assert [r.video_time for r in results] == [f.time for f in frames[1::2]] == [6.0, 39.0, 51.0]
