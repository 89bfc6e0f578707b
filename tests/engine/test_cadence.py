"""Adaptive cadence: the policy's arithmetic, then a real session that falls behind on a real video."""

from __future__ import annotations

import numpy as np
import pytest

from app.capture.video import VideoFileSource
from app.core.types import Frame
from app.engine.cadence import Cadence
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.session import ProactiveSession, SessionConfig

IMG = np.zeros((4, 4, 3), np.uint8)


def frames(n: int, dropped: int = 0) -> list[Frame]:
    return [Frame(IMG, float(i), i, dropped=dropped) for i in range(n)]


def test_keep_never_skips_or_lowers():
    c = Cadence("keep", interval=1.0, frames_per_turn=2, tokens_per_frame=128)
    r = c.after_step(6000.0, frames(2))
    assert r.realtime_factor == pytest.approx(3.0) and r.behind
    assert not any(c.skip(f, source_live=False) for f in frames(10))
    assert c.budget(128) == 128 and r.tokens_per_frame == 128 and r.frames_skipped == 0


def test_live_skips_what_a_real_clock_would_and_lowers_tokens_within_bounds():
    c = Cadence("live", interval=1.0, frames_per_turn=2, tokens_per_frame=128, min_tokens_per_frame=32)
    r = c.after_step(5500.0, frames(2))  # 5.5 s for 2 s of video: 3.5 s late → 3 frames stale (0.5 s carried)
    assert r.realtime_factor == pytest.approx(2.75)
    assert [c.skip(f, source_live=False) for f in frames(5)] == [True, True, True, False, False]
    assert c.after_step(2000.0, frames(2)).frames_skipped == 3  # on time: the 0.5 s stays carried
    assert r.tokens_per_frame == 64  # at most halved in one step
    for _ in range(5):
        r = c.after_step(8000.0, frames(2))
    assert r.tokens_per_frame == 32  # never below the minimum
    for _ in range(10):
        r = c.after_step(200.0, frames(2))  # well under real time: raised back, never above the configured
    assert r.tokens_per_frame == 128 and c.budget(96) == 96


def test_live_source_skips_by_itself_and_is_counted_once():
    c = Cadence("live", interval=1.0, frames_per_turn=1, tokens_per_frame=64)
    c.after_step(4000.0, frames(1))
    assert [c.skip(f, source_live=True) for f in frames(2, dropped=3)] == [False, False]
    assert c.frames_skipped == 6
    with pytest.raises(ValueError):
        Cadence("sometimes", 1.0, 1, 64)
    with pytest.raises(ValueError):
        SessionConfig(cadence="sometimes")


def test_session_falls_behind_and_stays_live(tiny_model, vtest_avi):
    """A 0.1 ms interval no machine can follow: 'live' skips stale frames, the clock keeps video time, and
    tokens per frame come down to the minimum; 'keep' uses every frame. (At 1 ms, a tiny-model step at the
    minimum 16 tokens a frame once came in under the 2 ms its two frames cover.)"""
    interval = 1e-4
    res = {}
    for policy in ("keep", "live"):
        with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=4096, n_gpu_layers=0)) as b:
            cfg = SessionConfig(interval=0.1, frames_per_turn=2, tokens_per_frame=64,
                                talkativeness=-30.0, cadence=policy, min_tokens_per_frame=16)
            cfg.interval = interval  # below the settings' floor on purpose: no machine can follow it
            s = ProactiveSession(b, cfg)
            with VideoFileSource(vtest_avi, realtime=False) as src:
                out = []
                for r in s.run(src):
                    out.append(r)
                    if len(out) == 4:
                        break
        res[policy] = out
    keep, live = res["keep"], res["live"]
    first = keep[0].frames[0].index
    assert [f.index for r in keep for f in r.frames] == list(range(first, first + 8))
    assert all(r.cadence.behind and r.cadence.frames_skipped == 0 and r.cadence.tokens_per_frame == 64 for r in keep)
    assert all(r.cadence.behind for r in live)
    skipped = live[-1].cadence.frames_skipped
    indices = [f.index for r in live for f in r.frames]
    assert skipped > 0 and indices[-1] - indices[0] == 7 + skipped  # the frames not shown are exactly the ones counted
    assert live[-1].video_time == pytest.approx((8 + skipped) * interval)
    assert live[-1].cadence.tokens_per_frame == 16
    assert live[-1].to_json()["cadence"]["frames_skipped"] == skipped


def test_live_carries_the_part_of_a_frame_it_did_not_skip():
    """3.5 s late at 1 s a frame: 3 frames skipped and 0.5 s carried; a later 0.5 s makes the carried part a
    whole frame (dropping the carry would lose it: a session 1.5 s behind a live clock forever)."""
    c = Cadence("live", interval=1.0, frames_per_turn=2, tokens_per_frame=128)
    c.after_step(5500.0, frames(2))
    assert sum(c.skip(f, source_live=False) for f in frames(5)) == 3
    c.after_step(2500.0, frames(2))  # 0.5 s late: with the 0.5 s carried, one whole frame is stale
    assert [c.skip(f, source_live=False) for f in frames(3)] == [True, False, False]
    assert c.frames_skipped == 4
    c.after_step(2000.0, frames(2))  # on time, nothing carried: nothing to skip
    assert not any(c.skip(f, source_live=False) for f in frames(3))


def test_live_tokens_change_only_outside_the_hysteresis_band():
    """Lowered only above 1.0× real time, raised only below 0.6×; between them (and at both ends) unchanged."""
    def after(rtf: float, tokens: int = 64) -> int:
        c = Cadence("live", interval=1.0, frames_per_turn=2, tokens_per_frame=128, min_tokens_per_frame=16)
        c.tokens_per_frame = tokens
        return c.after_step(rtf * 2000.0, frames(2)).tokens_per_frame

    assert after(1.0) == 64  # exactly real time: not behind
    assert after(1.25) == 51  # behind: scaled by 1 / 1.25
    assert after(0.99) == 64 and after(0.8) == 64  # just under real time: the band, no change
    assert after(0.6) == 64  # the band's lower end is still in it
    assert after(0.59) == 80  # well under real time: raised by 1.25×
    assert after(0.3, tokens=120) == 128  # never above the configured
