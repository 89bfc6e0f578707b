"""The engine's own paths walked on a model that really says ``NO REPLY`` and really replies: the trained demo.

The random tiny model ends its silent turns with ``<|im_end|>`` and its replies are re-rendered, so the
instant-silence path, reply tokens kept in the cache and ``NO REPLY`` tails never run on it. The demo
model is silent with ``NO REPLY`` and answers the synthetic videos it was trained for; here it plays
held-out ones (seed 7). It is the demo shipped in ``assets/models/demo`` (fixture ``bundled_demo_model``):
the same weights on every machine, so what it says does not depend on the CPU a demo was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.capture.resize import fit_frame
from app.capture.video import VideoFileSource
from app.core import protocol
from app.engine.llama_backend import LlamaBackend, LlamaSettings
from app.engine.llama_native import Chunks, Context, ContextSettings
from app.engine.session import ProactiveSession, SessionConfig
from app.eval.synthetic import make_video

TOKENS_PER_FRAME = 16  # as trained (112×112 frames → 4×4 merged tokens)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[tuple[Path, str]]:
    """Held-out synthetic videos (never trained on) and their questions."""
    out = []
    for family, index in (("appear", 0), ("colour", 1)):
        v = make_video(family, "easy", index, seed=7)
        out.append((v.write(tmp_path_factory.mktemp("clips") / f"{v.id}.avi"), v.question))
    return out


def turn_frames(video: Path, frames_per_turn: int = 2) -> list[list[np.ndarray]]:
    """The frames a session would give the model, grouped by turn (1 s apart, resized as trained)."""
    with VideoFileSource(video, realtime=False) as src:
        frames = [fit_frame(f.image, TOKENS_PER_FRAME) for f in src.sample(1.0)]
    return [frames[i:i + frames_per_turn] for i in range(0, len(frames) - frames_per_turn + 1, frames_per_turn)]


def greedy_backend(model: Path, mmproj: Path, **settings) -> LlamaBackend:
    """The reference: every reply decoded token by token, ``NO REPLY`` included (no instant silence)."""
    from app.engine.llama_reference import ReferenceLlamaBackend

    return ReferenceLlamaBackend(model, mmproj, LlamaSettings(**settings), instant_silence=False)


def play(backend: LlamaBackend, video: Path, question: str) -> list:
    session = ProactiveSession(backend, SessionConfig(interval=1.0, frames_per_turn=2,
                                                      tokens_per_frame=TOKENS_PER_FRAME, max_new_tokens=24))
    session.ask(question)
    with VideoFileSource(video, realtime=False) as src:
        out = list(session.run(src))
    backend.close()
    return out


def test_instant_silence_decides_as_token_by_token_greedy_decoding(bundled_demo_model, clips):
    """Same transcript both ways, and every silent turn really took the instant path.

    The instant path reads the decision off the first token's logits and evaluates no reply token:
    its ``NO REPLY<|im_end|>`` rides in the next step's batch. Greedy decoding evaluates ``NO`` and
    `` REPLY`` during the step. So right after a silent step the instant engine holds exactly
    len(tokens("NO REPLY")) fewer cells than the greedy one, and the same number after a spoken one.
    """
    model, mmproj = bundled_demo_model
    settings = dict(n_ctx=4096, n_gpu_layers=0)
    silent_steps = spoken_steps = 0
    for video, question in clips:
        inst_backend = LlamaBackend(model, mmproj, LlamaSettings(**settings))
        no_reply_tokens = len(inst_backend.model.tokenize(protocol.NO_REPLY))
        inst = play(inst_backend, video, question)
        greedy = play(greedy_backend(model, mmproj, **settings), video, question)
        assert [(r.silent, r.text) for r in inst] == [(r.silent, r.text) for r in greedy], video.name
        for a, b in zip(inst, greedy, strict=True):
            assert a.first_token_margin == pytest.approx(b.first_token_margin, abs=1e-4)
            if a.silent:
                assert a.text == protocol.NO_REPLY  # the trained model's silence, not an empty turn
                assert b.kv_cells - a.kv_cells == no_reply_tokens, f"turn {a.turn}: the instant path was not taken"
            else:
                assert b.kv_cells == a.kv_cells
        silent_steps += sum(r.silent for r in inst)
        spoken_steps += sum(not r.silent for r in inst)
    assert silent_steps >= 4 and spoken_steps >= 2, (silent_steps, spoken_steps)


def _eval_history(backend: LlamaBackend, ctx: Context, text: str, images: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Evaluate a whole rendered history from scratch: (last logits, cells)."""
    ctx.clear()
    with Chunks(backend.proj, text, images) as chunks:
        pos = 0
        for i in range(len(chunks.info)):
            pos = chunks.eval_chunk(ctx, i, pos, logits_last=i == len(chunks.info) - 1)
        return ctx.last_logits(backend.model.n_vocab), chunks.n_tokens


@pytest.mark.parametrize("kv_f32", [True, False])
def test_incremental_equals_full_history_with_replies_and_silences_kept(bundled_demo_model, clips, kv_f32):
    """Turn by turn on the cache == the whole rendered history evaluated at once, spoken and silent turns alike.

    With the trained model the reply tokens are canonical, so they stay in the cache as decoded, and
    silent turns leave a ``NO REPLY`` tail for the next step: both are compared here. An F16 cache
    rounds the same values in both runs, so it is held to the same decisions at a looser tolerance.
    """
    model, mmproj = bundled_demo_model
    tol = 1e-3 if kv_f32 else 5e-2
    video, question = clips[0]
    backend = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=4096, n_gpu_layers=0, kv_type="f32" if kv_f32 else "f16"))
    fresh = Context(backend.model, ContextSettings(n_ctx=4096, kv_type="f32" if kv_f32 else "f16", flash_attn=backend.ctx.flash_attn))
    history = protocol.system_turn()
    seen: list[np.ndarray] = []
    kinds: set[str] = set()
    try:
        for i, imgs in enumerate(turn_frames(video)):
            text = question if i == 0 else ""
            out = backend.step(imgs, text, max_new_tokens=24)
            seen += imgs
            history += protocol.user_turn(len(imgs), text, backend.proj.marker) + protocol.assistant_prefix()
            ref, cells = _eval_history(backend, fresh, history, seen)
            diff = float(np.abs(ref - backend.last_logits).max())
            assert diff < tol, f"turn {i}: incremental vs full max |Δ| {diff:.2e}"
            assert int(np.argmax(ref)) == int(np.argmax(backend.last_logits))
            if out.silent:
                kinds.add("silent")
                assert out.text == protocol.NO_REPLY
                assert out.kv_cells == cells  # instant silence: the tail is not in the cache yet
            else:
                # kept as decoded (canonical tokens), or taken back and re-rendered in the next step's head
                kept = out.kv_cells - cells
                assert kept in (0, len(backend.model.tokenize(out.text, parse_special=False))), f"turn {i}"
                kinds.add("kept reply" if kept else "re-rendered reply")
            history += protocol.assistant_tail(out.text)
    finally:
        fresh.close()
        backend.close()
    assert {"silent", "kept reply"} <= kinds, kinds


def _positions_and_cells(backend: LlamaBackend, text: str, images: list[np.ndarray]):
    """(next position, cells, [(start, end, cells) per frame]) of a rendered history."""
    frames = []
    with Chunks(backend.proj, text, images) as chunks:
        pos = 0
        for ci in chunks.info:
            if ci.is_image:
                frames.append((pos, pos + ci.n_pos, ci.n_tokens))
            pos += ci.n_pos
        return pos, chunks.n_tokens, frames


def test_eviction_removes_oldest_frames_first_then_oldest_silent_turns(bundled_demo_model, clips):
    """Every removal from the cache, in order, against the layout of the rendered history.

    The window is small enough that frames go first (oldest turn first, frame by frame) and then whole
    silent turns (oldest first); the turns with dialogue never go while a silent one is left. After each
    step the cells in use equal the history's cells minus exactly the cells removed.

    Whether the model speaks does not decide what is tested: every step's decision is forced by the
    talkativeness bias (±50 decides every step), speaking at ``spoken`` and silent elsewhere, and the stream
    is long enough that even all-silent turns overflow the window once their frames are gone. So both
    kinds of eviction happen, and silent turns are evicted past older dialogue turns, on any machine.
    """
    model, mmproj = bundled_demo_model
    video, question = clips[0]
    spoken = (0, 2, 5)  # the question's turn and two later ones speak; every other turn is silent
    stream = turn_frames(video) * 12  # a long stream (48 turns) from the same held-out clip
    backend = LlamaBackend(model, mmproj, LlamaSettings(n_ctx=512, n_gpu_layers=0))
    removed: list[tuple[int, int]] = []
    real_remove = backend.ctx.remove

    def remove(p0: int, p1: int) -> bool:
        removed.append((p0, p1))
        return real_remove(p0, p1)

    backend.ctx.remove = remove  # type: ignore[method-assign]
    history, images = protocol.system_turn(), []
    turns: list[dict] = []  # per turn: start position, cells before it, frames, dialogue, what is gone
    gone_cells = 0
    kinds = set()
    try:
        for n, imgs in enumerate(stream):
            start, cells_before, _ = _positions_and_cells(backend, history, images)
            if turns:
                turns[-1]["end"], turns[-1]["cells"] = start, cells_before - turns[-1]["cells_before"]
            text = question if n == 0 else ""
            done = len(removed)
            talk = 50.0 if n in spoken else -50.0
            out = backend.step(imgs, text, talkativeness=talk, max_new_tokens=24)
            assert out.silent == (n not in spoken), f"turn {n}: talkativeness {talk:+} did not decide ({out.text!r})"
            history += protocol.user_turn(len(imgs), text, backend.proj.marker) + protocol.assistant_prefix()
            images += imgs
            _, cells_now, frames = _positions_and_cells(backend, history, images)
            turns.append({"start": start, "cells_before": cells_before, "frames": frames[-len(imgs):],
                          "dialogue": bool(text) or not out.silent, "frames_gone": 0, "gone": False})
            rerendered = False
            for span in removed[done:]:
                if span[1] == -1:  # a non-canonical reply taken back to be re-rendered: not an eviction
                    assert not out.silent and span == removed[-1]
                    rerendered = True
                    continue
                closed = turns[:-2]  # the previous turn's end is only known once this step began
                frame_left = [(t, f) for t in closed for f in t["frames"][t["frames_gone"]:]]
                if frame_left and span == frame_left[0][1][:2]:  # the oldest frame still there
                    t, f = frame_left[0]
                    t["frames_gone"] += 1
                    gone_cells += f[2]
                    kinds.add("frame")
                    continue
                assert not frame_left, f"turn {n}: removed {span} while older frames remain: {frame_left[0][1]}"
                live = [t for t in closed if not t["gone"]]
                silent_left = [t for t in live if not t["dialogue"]]
                oldest = (silent_left or live)[0]
                assert span == (oldest["start"], oldest["end"]), f"turn {n}: removed {span}, expected the " \
                    f"oldest {'silent' if silent_left else 'dialogue'} turn {(oldest['start'], oldest['end'])}"
                oldest["gone"] = True
                gone_cells += oldest["cells"] - sum(f[2] for f in oldest["frames"][:oldest["frames_gone"]])
                kinds.add("turn")
            kept_reply = 0 if out.silent or rerendered else len(backend.model.tokenize(out.text, parse_special=False))
            assert out.kv_cells == cells_now + kept_reply - gone_cells, f"turn {n}: cells in use"
            assert out.kv_cells <= backend.n_ctx
            history += protocol.assistant_tail(out.text)
    finally:
        backend.close()
    assert kinds == {"frame", "turn"}, "the window should have forced both kinds of eviction"
    assert [n for n, t in enumerate(turns) if t["dialogue"]] == list(spoken)
    assert not any(turns[n]["gone"] for n in spoken), "the turns with dialogue outlived every silent turn"
    assert all(turns[n]["gone"] for n in (1, 3, 4, 6)), "silent turns between and after the dialogue turns went"
