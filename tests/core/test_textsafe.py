"""Text from outside made safe to print, and URLs without their passwords."""

from __future__ import annotations

import pytest

from app.core.textsafe import terminal_safe, without_userinfo


def test_escapes_controls_and_lone_surrogates_are_removed():
    evil = "A\x1b]0;pwned\x07 red\x1b[2J \x9b31mstar\udcff.\x00\n\tok"
    assert terminal_safe(evil) == "A red star.\n\tok"
    print(terminal_safe(evil))  # printable on a strict UTF-8 stream: no lone surrogate left


@pytest.mark.parametrize(("url", "clean"), [
    ("http://user:pass@gpu-box:8080/v1", "http://gpu-box:8080/v1"),
    ("remote: https://u@h/v1", "remote: https://h/v1"),
    ("http://a@b@host/x", "http://host/x"),  # the host starts after the last '@', as urlsplit reads it
    ("http://host/path@x?q=a@b", "http://host/path@x?q=a@b"),  # an '@' after the host is not userinfo
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("see http://x:y@a and ftp://c:d@b/", "see http://a and ftp://b/"),
])
def test_userinfo_is_removed_from_every_url(url, clean):
    assert without_userinfo(url) == clean
