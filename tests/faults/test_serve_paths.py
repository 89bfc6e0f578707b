"""Fault catalogue: the two ``duet serve`` checks that hand mutations slipped past (issue 24, "tests that catch
what their names promise").

* **DNS rebinding.** An image URL's host is resolved, the address checked against the policy, and the
  connection must be opened *to that address*. A fetch that connected by name would resolve it again, and a
  name that answers a public address the first time and a loopback one the second would reach the server's
  own machine. Every other case uses a literal IP, so nothing could see the difference; here the resolver is
  ours (``socket.getaddrinfo`` patched in-process): the first lookup of the name gives an allowed address,
  every later one a refused address, where a second server records whatever reaches it.
* **``--allow-files`` containment** against a sibling folder whose name starts with the allowed one's
  (``allowed-x/`` next to ``allowed/``): a prefix test without a path separator would let it through.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from app.engine.serve import ImageRefused, ServePolicy, resolve_image
from tests.engine.test_serve import png_url

PNG = base64.b64decode(png_url(32, 24).split(",")[1])
NAME = "images.rebind.test"


@contextlib.contextmanager
def image_server(host: str, port: int, seen: list[tuple[str, str]]) -> Iterator[int]:
    """An http server on ``host``:``port`` (0: any) answering every GET with the PNG; records (host, path)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append((host, self.path, self.headers.get("Host")))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_image_url_is_fetched_from_the_address_that_was_checked(monkeypatch):
    """127.0.0.2 is allowed (--allow-url-net), 127.0.0.3 is not; the name answers .2 once, then .3."""
    seen: list = []
    with image_server("127.0.0.2", 0, seen) as port, image_server("127.0.0.3", port, seen):
        real = socket.getaddrinfo
        lookups: list[str] = []

        def rebinding(host, *args, **kwargs):
            if host != NAME:
                return real(host, *args, **kwargs)  # literal addresses resolve as usual
            lookups.append(host)
            address = "127.0.0.2" if len(lookups) == 1 else "127.0.0.3"
            return real(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        policy = ServePolicy(api_key="k" * 32, allow_urls=True, url_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                             fetch_timeout=10.0)
        url = resolve_image(f"http://{NAME}:{port}/frame.png", policy)
    assert base64.b64decode(url.split(",", 1)[1]) == PNG
    assert seen == [("127.0.0.2", "/frame.png", f"{NAME}:{port}")]  # the checked address, the name in Host
    assert lookups == [NAME]  # resolved once: never again between the check and the connection


def test_a_name_whose_first_answer_is_refused_is_not_tried_again(monkeypatch):
    """The mirror case: the first answer is the refused address; a second lookup must not be made to find another."""
    seen: list = []
    with image_server("127.0.0.2", 0, seen) as port, image_server("127.0.0.3", port, seen):
        real = socket.getaddrinfo
        lookups: list[str] = []

        def rebinding(host, *args, **kwargs):
            if host != NAME:
                return real(host, *args, **kwargs)
            lookups.append(host)
            return real("127.0.0.3" if len(lookups) == 1 else "127.0.0.2", *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        policy = ServePolicy(api_key="k" * 32, allow_urls=True, url_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        with pytest.raises(ImageRefused, match=rf"{NAME} is 127\.0\.0\.3, a loopback, private or otherwise non-public"):
            resolve_image(f"http://{NAME}:{port}/frame.png", policy)
    assert seen == [] and lookups == [NAME]


@pytest.fixture
def folders(tmp_path):
    """``allowed/`` with a picture, and its sibling ``allowed-x/`` with a secret picture."""
    allowed, sibling = tmp_path / "allowed", tmp_path / "allowed-x"
    allowed.mkdir()
    sibling.mkdir()
    (allowed / "frame.png").write_bytes(PNG)
    (sibling / "secret.png").write_bytes(PNG)
    (allowed / "link.png").symlink_to(sibling / "secret.png")
    return allowed, sibling


@pytest.mark.parametrize("ref", [
    "../allowed-x/secret.png",
    "{sibling}/secret.png",
    "file://{sibling}/secret.png",
    "{allowed}/../allowed-x/secret.png",
    "link.png",  # a symlink inside allowed/ to the sibling
])
def test_allow_files_does_not_reach_a_sibling_folder_sharing_its_prefix(folders, ref):
    allowed, sibling = folders
    policy = ServePolicy(api_key="k" * 32, allow_files=allowed)
    with pytest.raises(ImageRefused, match="outside the allowed folder"):
        resolve_image(ref.format(allowed=allowed, sibling=sibling), policy)


def test_allow_files_serves_its_own_folder(folders):
    allowed, _ = folders
    policy = ServePolicy(api_key="k" * 32, allow_files=allowed)
    for ref in ("frame.png", str(allowed / "frame.png"), f"file://{allowed}/frame.png"):
        assert base64.b64decode(resolve_image(ref, policy).split(",", 1)[1]) == PNG
