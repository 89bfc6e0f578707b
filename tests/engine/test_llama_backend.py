"""The in-process engine on the tiny model and real video: reference modes agree, context stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

from app.capture.video import VideoFileSource
from app.core import protocol
from app.engine.backend import BackendError
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.llama_reference import NO_GUARD, ReferenceLlamaBackend
from app.engine.reply_guard import ReplyGuard
from app.engine.session import ProactiveSession, SessionConfig


def run_video(tiny_model, video, settings: LlamaSettings, talk: list[float], turns: int = 12,
              fpt: int = 2, interval: float = 1.0, stats: dict | None = None, **reference):
    """Play ``video`` for ``turns`` turns; talkativeness per turn cycles through ``talk``. ``reference``:
    ReferenceLlamaBackend's switches (instant_silence=False, full_reeval=True); none = the engine."""
    backend = (ReferenceLlamaBackend(tiny_model.model, tiny_model.mmproj, settings, **reference) if reference
               else LlamaBackend(tiny_model.model, tiny_model.mmproj, settings))
    session = ProactiveSession(backend, SessionConfig(interval=interval, frames_per_turn=fpt,
                                                      tokens_per_frame=64, max_new_tokens=8))
    session.ask("What is happening on the street?")
    session.ask("Who is walking?", at=9.0)
    out = []
    with VideoFileSource(video, realtime=False) as src:
        for r in session.run(src):
            out.append(r)
            if len(out) == turns:
                break
            session.config.talkativeness = talk[len(out) % len(talk)]
    if stats is not None:
        stats["frames_encoded"] = backend.frames_encoded
    backend.close()
    return out


TALK = [-30.0, 30.0, -30.0, 0.0]


def test_session_protocol_times_and_turns(tiny_model, vtest_avi):
    res = run_video(tiny_model, vtest_avi, LlamaSettings(n_ctx=4096, n_gpu_layers=0), TALK, turns=8)
    assert [r.turn for r in res] == list(range(8))
    assert [r.video_time for r in res] == [2.0 * (i + 1) for i in range(8)]  # 2 frames × 1 s per turn
    assert [r.frames[-1].time for r in res] == [2.0 * (i + 1) for i in range(8)]
    assert res[0].question == "What is happening on the street?"
    assert next(r for r in res if r.question == "Who is walking?").video_time == 10.0  # first turn ending ≥ 9 s
    assert all(r.silent == (r.text == protocol.NO_REPLY or not r.text.strip()) for r in res)
    assert any(r.silent for r in res) and any(not r.silent for r in res)


def test_incremental_gives_same_transcript_as_full_reevaluation(tiny_model, tree_avi):
    base = dict(n_ctx=8192, n_gpu_layers=0, kv_type="f32", guard=NO_GUARD)  # the guard is tested on its own
    inc_stats: dict = {}
    full_stats: dict = {}
    inc = run_video(tiny_model, tree_avi, LlamaSettings(**base), TALK, stats=inc_stats)
    full = run_video(tiny_model, tree_avi, LlamaSettings(**base), TALK, stats=full_stats, full_reeval=True)
    assert [(r.silent, r.text) for r in inc] == [(r.silent, r.text) for r in full]
    # …while the full re-evaluation re-encodes every frame each turn: 2 + 4 + … + 24 vs 24 frames.
    assert inc_stats["frames_encoded"] == 24
    assert full_stats["frames_encoded"] == sum(2 * t for t in range(1, 13))


@pytest.mark.parametrize("talk", [-8.0, -2.0, 0.0, 2.0, 8.0])
def test_instant_silence_decides_as_full_greedy_decoding(tiny_model, vtest_avi, talk):
    """Instant silence (first-token logits) vs decoding every token: identical decisions and texts."""
    inst = run_video(tiny_model, vtest_avi, LlamaSettings(n_ctx=4096, n_gpu_layers=0, guard=NO_GUARD), [talk], turns=6)
    greedy = run_video(tiny_model, vtest_avi, LlamaSettings(n_ctx=4096, n_gpu_layers=0), [talk], turns=6,
                       instant_silence=False)
    assert [(r.silent, r.text) for r in inst] == [(r.silent, r.text) for r in greedy]


def test_reply_guard_ends_loops_and_caps_length(tiny_model, tree_avi):
    """The random tiny model loops ("helpful helpful helpful …") on tree.avi: the guard keeps one copy."""
    base = dict(n_ctx=8192, n_gpu_layers=0, kv_type="f32")
    free = run_video(tiny_model, tree_avi, LlamaSettings(**base, guard=NO_GUARD), TALK)
    guard = ReplyGuard(max_tokens=6)
    kept = run_video(tiny_model, tree_avi, LlamaSettings(**base, guard=guard), TALK)
    cut = 0
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=512, n_gpu_layers=0)) as b:
        for f, k in zip(free, kept):
            if not cut:  # identical dialogues up to the first cut; after it, later turns see the shorter reply
                assert f.silent == k.silent
                assert k.silent or f.text.startswith(k.text)
            if not k.silent:
                tokens = b.model.tokenize(k.text, parse_special=False)
                # The cap counts sampled tokens; a reply cut inside a UTF-8 character re-tokenizes longer.
                assert len(tokens) <= 6 or "\ufffd" in k.text, k.text
                assert not any(guard.loop_tail(tokens[:i]) for i in range(1, len(tokens) + 1)), k.text
            cut += f.text != k.text
    assert cut, "the unguarded replies should contain a loop or run past the cap"


def test_talkativeness_gives_both_outcomes(tiny_model):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (112, 140, 3), dtype=np.uint8) for _ in range(2)]
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=2048, n_gpu_layers=0)) as b:
        margin = b.step(imgs, "Anything?", talkativeness=0.0).first_token_margin
        b.reset(protocol.SYSTEM_PROMPT)
        quiet = b.step(imgs, "Anything?", talkativeness=-margin - 1.0, max_new_tokens=4)
        b.reset(protocol.SYSTEM_PROMPT)
        loud = b.step(imgs, "Anything?", talkativeness=-margin + 1.0, max_new_tokens=4)
    # margin = best speaking logit − best silent logit; the bias adds to it, so −margin is the tipping point.
    assert quiet.silent and quiet.text == protocol.NO_REPLY
    assert not loud.silent and loud.text.strip()
    assert loud.first_token_margin == pytest.approx(1.0, abs=1e-3)


def test_long_stream_stays_in_window_with_dialogue_intact(tiny_model):
    """A thousand turns in a 512-cell window: frames and silent turns go, questions and replies stay."""
    rng = np.random.default_rng(5)
    frame = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(2)]
    questions, talk_turns = {5, 700}, {6, 7, 8, 9, 701, 702, 703, 704}
    replies, kept = set(), []
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=512, n_gpu_layers=0)) as b:
        for turn in range(1000):
            out = b.step(frame, "Where is the dog?" if turn in questions else "",
                         talkativeness=30.0 if turn in talk_turns else -30.0, max_new_tokens=4)
            assert out.kv_cells <= b.n_ctx
            kept.append(out.kv_cells)
            if not out.silent:
                replies.add(turn)
        live = {t.index for t in b.turns if not t.removed}
        dialogue = {t.index for t in b.turns if t.dialogue}
        assert replies, "the bias should have produced at least one spoken reply"
        assert questions | replies == dialogue
        assert dialogue <= live  # the conversation survives eviction
        assert len(live) < 100 and out.turns_frames_dropped > 900
        assert b.n_past > 10 * b.n_ctx  # positions kept growing past n_ctx; no shift was needed
    assert max(kept[500:]) <= 512 and min(kept[500:]) > 256  # steady state: bounded, not emptied


def test_bad_inputs(tiny_model, tmp_path):
    with pytest.raises(BackendError, match="swap"):
        LlamaBackend(tiny_model.mmproj, tiny_model.model)
    with pytest.raises(BackendError, match="not found"):
        LlamaBackend(tmp_path / "none.gguf", tiny_model.mmproj)
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=256, n_gpu_layers=0)) as b:
        big = [np.zeros((448, 448, 3), np.uint8)] * 2  # 2 × 256 tokens > 256 cells
        with pytest.raises(BackendError, match="raise n_ctx"):
            b.step(big, "")


@pytest.mark.parametrize("fails", ["context", "projector"])
def test_failed_start_frees_what_was_loaded(tiny_model, monkeypatch, fails):
    """llama.cpp refusing the context (out of memory) or libmtmd the projector: the real model (and context)
    already loaded are freed, and the caller's settings object is left as it was."""
    import llama_cpp

    from app.engine import llama_backend, llama_native

    made: list = []

    class Tracked(llama_native.Model):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    class TrackedCtx(llama_native.Context):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(llama_backend, "Model", Tracked)
    monkeypatch.setattr(llama_backend, "Context", TrackedCtx)
    if fails == "context":  # what llama_init_from_model returns when the KV cache cannot be allocated
        monkeypatch.setattr(llama_cpp, "llama_init_from_model", lambda model, params: None)
    else:  # what mtmd_init_from_file returns on a projector it cannot use
        monkeypatch.setattr(llama_native.mtmd_cpp, "mtmd_init_from_file", lambda path, model, params: None)
    settings = LlamaSettings(n_ctx=512, n_gpu_layers=0)
    with pytest.raises(BackendError, match="context of 512" if fails == "context" else "vision projector"):
        LlamaBackend(tiny_model.model, tiny_model.mmproj, settings)
    assert made and all(h.ptr is None for h in made)  # every handle that was created is freed
    assert len(made) == (1 if fails == "context" else 2)
    assert settings.n_threads == 0  # resolved on the backend's own copy


def test_embedding_cache_reuses_identical_frames_bit_exactly(tiny_model):
    """A static picture is encoded once; the logits with cached embeddings equal those with fresh ones."""
    rng = np.random.default_rng(11)
    still = rng.integers(0, 256, (112, 140, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (112, 140, 3), dtype=np.uint8)
    turns = [[still, still], [still, other], [still, still]]
    cached = LlamaSettings(n_ctx=2048, n_gpu_layers=0, kv_type="f32")
    logits = {}
    for name, settings in (("cached", cached), ("fresh", LlamaSettings(**{**cached.__dict__, "embed_cache_mib": 0}))):
        with LlamaBackend(tiny_model.model, tiny_model.mmproj, settings) as b:
            outs = [b.step(t, "", talkativeness=-30.0) for t in turns]
            logits[name] = b.last_logits
            encoded, stats = b.frames_encoded, b.embed_cache.stats
        if name == "cached":
            assert encoded == 2  # `still` once, `other` once
            assert [o.frames_reused for o in outs] == [1, 1, 2]
            assert stats.hits == 4 and stats.lookups == 6 and stats.hit_rate == pytest.approx(4 / 6)
            assert outs[2].timings.vision_ms == 0.0 and outs[2].timings.prefill_ms > 0  # no encoder; the LLM pass ran
        else:
            assert encoded == 6 and all(o.frames_reused == 0 for o in outs)
    assert np.array_equal(logits["cached"], logits["fresh"])


def test_flash_attention_auto_is_chosen_per_part_and_device():
    """auto: llama.cpp's choice on a GPU; on the CPU off for the text model, on for the projector."""
    auto = LlamaSettings()
    assert auto.flash_attn_type(on_gpu=False, projector=False) == 0
    assert auto.flash_attn_type(on_gpu=False, projector=True) == 1
    assert auto.flash_attn_type(on_gpu=True, projector=False) == -1
    assert auto.flash_attn_type(on_gpu=True, projector=True) == -1
    for name, want in (("on", 1), ("off", 0)):
        s = LlamaSettings(flash_attn=name)
        assert {s.flash_attn_type(on_gpu=g, projector=p) for g in (False, True) for p in (False, True)} == {want}


def test_evicting_the_first_turn_keeps_the_system_prompt(tiny_model):
    """Turn 0 is silent, so it is evicted whole once its frames are gone; the system prompt before it stays.

    The system prompt sits at positions [0, S) ahead of turn 0. Every removal is recorded and must start at
    or after S, and llama.cpp's own memory must still hold position 0 after turn 0 is gone (a turn 0 that
    began at position 0, or an eviction that took its head along, fails both)."""
    import llama_cpp

    rng = np.random.default_rng(11)
    frame = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(2)]
    with LlamaBackend(tiny_model.model, tiny_model.mmproj, LlamaSettings(n_ctx=1024, n_gpu_layers=0)) as b:
        system_tokens = len(b.model.tokenize(protocol.system_turn()))
        removed: list[tuple[int, int]] = []
        real_remove = b.ctx.remove

        def remove(p0: int, p1: int) -> bool:
            removed.append((p0, p1))
            return real_remove(p0, p1)

        b.ctx.remove = remove  # type: ignore[method-assign]
        first = None
        for _ in range(400):  # ends as soon as turn 0 is gone
            out = b.step(frame, "", talkativeness=-30.0, max_new_tokens=4)
            assert out.silent
            first = first or b.turns[0]
            if first.removed:
                break
        assert first is not None and first.index == 0 and first.removed, "the stream should have evicted turn 0"
        assert first.start >= system_tokens, f"turn 0 starts at {first.start}, inside the system prompt"
        assert removed and min(p0 for p0, _ in removed) >= system_tokens, f"a removal reached the system prompt: {removed}"
        assert llama_cpp.llama_memory_seq_pos_min(b.ctx.mem, 0) == 0, "the system prompt's first cell is gone"
        assert b.n_cells >= system_tokens
        b.step(frame, "Where is the dog?", talkativeness=-30.0, max_new_tokens=4)  # the session goes on
