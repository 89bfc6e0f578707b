"""Fault catalogue: one large image cannot stall ``duet serve`` (issue 24, item 4).

As found: a 4000×4000 PNG (15 KB, under the 16-megapixel cap) reached the vision encoder whole, was encoded
at 1792×1792 (5.5 GB, over 150 s, not cancellable) while every other chat timed out. Now every image over
the frame budget is resized before the encoder (to what a live session sends), and a chat whose client
leaves is ended between its images. Real server: llama-cpp-python with the bundled demo model behind the
guard, on loopback.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading

import numpy as np
import pytest
from PIL import Image

from app.core.vision import max_pixels_for, smart_resize
from app.engine.serve import PromptCancelled, ServePolicy, create_server_app, secure
from app.engine.serve_conn import uvicorn_options
from app.engine.serve_images import budget_size, fit_to_budget
from tests.engine.loopback import serve_asgi
from tests.engine.test_serve import KEY, call, chat, handler_control, open_chat, png_url, wait_for


def big_png(w: int = 4000, h: int = 4000) -> str:
    """A large, highly compressible picture (a gradient with a few bars), as the attack used: ~tens of KB."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :, 0] = (np.arange(w) * 255 // w).astype(np.uint8)[None, :]
    img[::97, :, 1] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def stock_app(bundled_demo_model):
    model, mmproj = bundled_demo_model
    return create_server_app(model, mmproj, n_ctx=8192, n_gpu_layers=0)


def encoder_sizes(caplog) -> list[tuple[int, int]]:
    return [(int(m.group(1)), int(m.group(2))) for r in caplog.records
            if (m := re.fullmatch(r"image to the encoder: (\d+)×(\d+) px", r.getMessage()))]


def test_a_4000_pixel_square_png_reaches_the_encoder_at_the_frame_budget(stock_app, caplog):
    url = big_png()
    assert len(url) < 200_000  # small on the wire, as in the attack
    policy = ServePolicy(api_key=KEY, max_tokens=4)
    other: dict = {}
    with caplog.at_level(logging.DEBUG, logger="duet.serve"), \
            serve_asgi(secure(stock_app, policy), **uvicorn_options(policy)) as base:
        second = threading.Thread(target=lambda: other.update(r=call(base, "POST", "/v1/chat/completions",
                                                                     chat(png_url(seed=3)), timeout=120)))
        second.start()  # a second client at the same time
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(url), timeout=120)
        second.join(120)
    assert status == 200, out
    assert other["r"][0] == 200, other
    th, tw = smart_resize(4000, 4000, max_pixels=max_pixels_for(128))
    assert (tw, th) == (308, 308)  # 11 × 11 tokens: the live session's 128-token frame of a square picture
    sizes = encoder_sizes(caplog)
    assert (308, 308) in sizes, sizes
    assert max(w * h for w, h in sizes) <= max_pixels_for(128)  # nothing larger reached the encoder
    assert out["usage"]["prompt_tokens"] < 300  # 121 visual tokens and the prompt, not 4,096


def test_images_within_the_budget_reach_the_model_byte_for_byte():
    """A Duet client's frames arrive already fitted: they must not be re-encoded."""
    policy = ServePolicy(api_key=KEY)
    small = base64.b64decode(png_url(308, 308).split(",")[1])
    assert fit_to_budget(small, policy) is None
    assert budget_size(308, 308, 128) is None and budget_size(316, 316, 128) is None  # ≤ 100,352 px: 128 tokens
    assert budget_size(400, 300, 128) == (364, 252)  # 120,000 px: over the budget, fitted as a frame would be
    # a thin strip is centre-cropped to Qwen's 1:200 aspect first, as the live session's fit_frame does
    th, tw = smart_resize(20, 4000, max_pixels=max_pixels_for(128))
    assert budget_size(20_000, 20, 128) == (tw, th)


def test_the_budget_follows_tokens_per_image():
    png = base64.b64decode(big_png(1200, 900).split(",")[1])
    for tokens in (64, 128, 512):
        fitted = Image.open(io.BytesIO(fit_to_budget(png, ServePolicy(api_key=KEY, tokens_per_image=tokens))))
        w, h = fitted.size
        assert (h, w) == smart_resize(900, 1200, max_pixels=max_pixels_for(tokens))
        assert w % 28 == 0 and h % 28 == 0 and w * h <= max_pixels_for(tokens)


def test_a_chat_whose_client_leaves_during_its_images_is_ended_before_the_next(stock_app, caplog, capfd):
    """Seven images at 256 tokens each: the client leaves once the first is encoded; the rest never are.

    The server logs the one line, and no traceback (a client leaving is not a fault of the server)."""
    control = handler_control()
    policy = ServePolicy(api_key=KEY, max_tokens=4, tokens_per_image=256)
    body = chat(big_png(1200, 1200))  # resized to 448×448 (16 × 16 tokens)
    body["messages"][0]["content"] = [body["messages"][0]["content"][0]] * 7 + [body["messages"][0]["content"][1]]
    guarded = secure(stock_app, policy)
    with caplog.at_level(logging.WARNING, logger="duet.serve"), \
            serve_asgi(guarded, **uvicorn_options(policy)) as base:
        control.chunks = 0  # the last test's count (the guard resets it when this chat gets the model)
        leaver = open_chat(base, body)
        wait_for(lambda: control.chunks > 0, "the first image was evaluated", limit=120)
        leaver.close()
        wait_for(lambda: any("cancelled during its prompt" in r.getMessage() for r in caplog.records),
                 "the chat was ended during its prompt", limit=120)
        status, _, out = call(base, "POST", "/v1/chat/completions", chat(png_url(seed=1)), timeout=120)
    assert status == 200, out
    [n] = [int(m.group(1)) for r in caplog.records
           if (m := re.fullmatch(r"chat cancelled during its prompt, after (\d+) chunks: the client went away",
                                 r.getMessage()))]
    assert 1 <= n < 7
    assert guarded.cancelled == 1 and guarded.served == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err and PromptCancelled.MESSAGE not in err, err


@pytest.mark.parametrize("value", ["2", "2000"])
def test_serve_refuses_a_tokens_per_image_outside_the_settings_range(value, run, data_dir, bundled_demo_model):
    model, mmproj = bundled_demo_model
    r = run("serve", "--model", model, "--mmproj", mmproj, "--tokens-per-image", value)
    assert (r.rc, f"--tokens-per-image must be within 4 to 1024 tokens, got {value}" in r.err) == (2, True), r.err
