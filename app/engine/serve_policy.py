"""What ``duet serve`` lets a request make it do: its policy, its API key, and the images it may read.

Split from :mod:`app.engine.serve` (the ASGI guard in front of the stock server): everything here is plain
functions over a :class:`ServePolicy`, so each rule is tested without a server. The rules themselves are
listed in that module's docstring: images inline by default; files only inside an allowed folder;
URLs only when allowed, at public addresses (or networks the user named), every redirect hop checked,
with one size and time limit for the whole chain; every image checked for its pixel count, and resized
to the frame budget when larger (:mod:`app.engine.serve_images`).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import os
import secrets
import socket
import ssl
import stat
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import SessionConfig, limit, setting, validate_limits
from app.core.errors import InputError
from app.core.paths import user_dir
from app.core.protocol import DEFAULT_TOKENS_PER_FRAME, MODEL_NAME
from app.engine.deadline import ExchangeDeadline


class ImageRefused(InputError):
    """An image reference the server's policy does not allow, or an image too large to accept."""


@dataclass(frozen=True)
class ServePolicy:
    """What ``duet serve`` accepts. The defaults are the safe ones (see the module docstring)."""

    api_key: str
    alias: str = MODEL_NAME
    allow_files: Path | None = None  # a folder whose regular files may be named by path / file:// URL
    allow_urls: bool = False  # fetch http(s) image URLs (public addresses only, see url_address_allowed)
    url_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # non-public ones allowed too
    max_redirects: int = 3  # each hop checked like the first
    cors_origins: tuple[str, ...] = ()
    max_body_mb: float = setting(64.0, 0.01, 4096.0, "largest request body accepted", "MB")
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_images: int = 64
    max_tokens: int = setting(512, 1, 32768, "cap on a reply's length", "tokens")
    body_timeout: float = 30.0  # seconds to receive a whole request body
    fetch_timeout: float = 10.0  # seconds to fetch one allowed URL / read one allowed file
    queue_timeout: float = 120.0  # seconds a chat may wait for the model before HTTP 503
    generation_timeout: float = setting(120.0, 1.0, 86400.0, "seconds a request may wait for the model, and seconds of generation before a reply is ended", "s")
    send_timeout: float = 30.0  # seconds a client may leave a piece of its reply unread (a stalled stream)
    # Larger images are resized to it (app/engine/serve_images.py); the range of the sessions' tokens_per_frame.
    tokens_per_image: int = setting(DEFAULT_TOKENS_PER_FRAME, limit(SessionConfig, "tokens_per_frame").low,
                                    limit(SessionConfig, "tokens_per_frame").high,
                                    "images larger than N visual tokens are resized to N before the model sees them, "
                                    "as a live session's frames are (as trained; match the clients' tokens_per_frame)",
                                    "tokens")
    max_queued: int = 64  # chats waiting for the model at once; more get 503 at once
    # Connections before their request (app/engine/serve_conn.py): slowloris sockets cannot crowd out a keyed client.
    header_timeout: float = 5.0  # seconds from the accept (or the last reply) to a request's complete headers
    header_waits_per_client: int = 16  # connections one address (an IPv6 /64) may have still sending headers
    header_waits: int = 512  # the same, all addresses together; past either, the oldest such connection is closed

    def __post_init__(self) -> None:
        validate_limits(self)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


# ---- API key -------------------------------------------------------------------------------------
def default_key_file() -> Path:
    return user_dir("serve-api-key", config=True)


def check_api_key(key: str, what: str, fix: str) -> None:
    """A key is 16 to 512 printable ASCII characters: it travels in an HTTP header, where anything else
    cannot be compared (a non-ASCII key answered 500 to every request)."""
    if not (16 <= len(key) <= 512) or not all(33 <= ord(c) < 127 for c in key):
        raise InputError(f"{what} must be 16 to 512 printable ASCII characters without spaces; {fix}")


def load_or_create_api_key(path: Path | None = None) -> tuple[str, bool]:
    """The stored key, or a new random one written 0600 (returns the key and whether it is new)."""
    path = path or default_key_file()
    if path.exists() or path.is_symlink():
        from app.core.bounded import read_regular_text

        try:  # a regular file of a few bytes: a FIFO or /dev/zero put there must not hang or fill memory
            key = read_regular_text(path, 4096).strip()
        except UnicodeDecodeError:
            key = ""
        check_api_key(key, f"{path}: the API key", "delete the file to get a new one")
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key, True


# ---- images --------------------------------------------------------------------------------------
def decode_data_url(url: str, max_bytes: int) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise ImageRefused("a data: image URL must be base64 (data:image/png;base64,…)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageRefused(f"an image is larger than the server's limit of {max_bytes // 1024 // 1024} MB")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageRefused(f"a data: image URL is not valid base64 ({e})") from None


def check_image(data: bytes, policy: ServePolicy) -> None:
    """Refuse what is not an image, or one with more pixels than allowed (read from its header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRefused(f"an image could not be read ({type(e).__name__})") from None
    if w * h > policy.max_image_pixels:
        raise ImageRefused(f"an image is {w}×{h} pixels; the server accepts at most {policy.max_image_pixels} pixels")


def _read_allowed_file(ref: str, policy: ServePolicy) -> bytes:
    if policy.allow_files is None:
        raise ImageRefused("local image paths are not allowed on this server (start it with --allow-files DIR); "
                           "send images inline as data: URLs")
    raw = urllib.parse.unquote(urllib.parse.urlparse(ref).path) if ref.startswith("file:") else ref
    root = policy.allow_files.resolve()
    try:
        path = (root / raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageRefused(f"{raw}: no such image file under the allowed folder") from None
    if not path.is_relative_to(root):
        raise ImageRefused(f"{raw}: outside the allowed folder {root}")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO, a device or a socket would block or never end
        raise ImageRefused(f"{raw}: not a regular file")
    if st.st_size > policy.max_image_bytes:
        raise ImageRefused(f"{raw}: {st.st_size} bytes; the server accepts at most {policy.max_image_bytes}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(policy.max_image_bytes + 1)[: policy.max_image_bytes]


REDIRECTS = (301, 302, 303, 307, 308)


def parse_networks(specs: list[str] | tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``--allow-url-net`` values → networks (a bare address is a one-address network)."""
    nets = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise InputError(f"--allow-url-net {spec}: not a network; give an address or CIDR such as "
                             "192.168.1.0/24 or 127.0.0.1") from None
    return tuple(nets)


def url_address_allowed(address: str, policy: ServePolicy) -> bool:
    """Whether the server may connect to ``address`` for an image URL.

    Public addresses are; loopback, private (RFC 1918, ULA), link-local (cloud metadata services at
    169.254.169.254), carrier-grade NAT, multicast and reserved ones are not, unless inside one of
    ``policy.url_networks`` (``--allow-url-net``): a client holding the key must not be able to make
    the server probe its own machine or network.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id (fe80::1%eth0) is not part of it
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in policy.url_networks):
        return True
    return ip.is_global and not ip.is_multicast


def _fetch_allowed_url(url: str, policy: ServePolicy) -> bytes:
    """Fetch an image URL, checking every redirect hop against the same policy.

    One deadline (``fetch_timeout``) and one size cap cover the whole chain, however many hops;
    at most ``max_redirects`` redirects are followed; each hop must be http(s) to an allowed
    address. The address checked is the address connected to (the name is resolved once per hop
    and the socket opened to that very address), so a name that resolves differently the second
    time cannot slip past the check.
    """
    if not policy.allow_urls:
        raise ImageRefused("remote image URLs are not allowed on this server (start it with --allow-urls); "
                           "send images inline as data: URLs")
    deadline = time.monotonic() + policy.fetch_timeout
    first = url
    for hop in range(policy.max_redirects + 1):
        where = url if hop == 0 else f"{first} (redirected to {url})"
        status, location, data = _get_once(url, where, policy, deadline)
        if status in REDIRECTS:
            if not location:
                raise ImageRefused(f"{where}: a redirect ({status}) without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise ImageRefused(f"{where}: answered HTTP {status}")
        return data
    raise ImageRefused(f"{first}: more than {policy.max_redirects} redirects; not followed further")


def _get_once(url: str, where: str, policy: ServePolicy, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET (no redirect following): (status, Location, body — read only for a 200)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRefused(f"{where}: scheme {scheme!r} is not fetched (http and https only)")
    try:
        host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
    except ValueError as e:  # a port that is not a number, or out of range
        raise ImageRefused(f"{where}: {e}") from None
    if not host:
        raise ImageRefused(f"{where}: no host")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ImageRefused(f"{where}: not fetched within {policy.fetch_timeout:g} s")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ImageRefused(f"{where}: could not be fetched ({e})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in addresses if url_address_allowed(a, policy)]
    if not allowed:
        shown = ", ".join(addresses)
        raise ImageRefused(f"{where}: {host} is {shown}, a loopback, private or otherwise non-public address; "
                           f"this server fetches only public addresses (start it with --allow-url-net "
                           f"{addresses[0].split('%')[0]}/{32 if ':' not in addresses[0] else 128} to allow it)")
    sock: socket.socket | None = None
    conn = None
    # One deadline covers the whole exchange (app/engine/deadline.py): a server trickling bytes is cut off too.
    with ExchangeDeadline(remaining, lambda: sock) as watch:
        try:
            sock = socket.create_connection((allowed[0], port), timeout=remaining)
            if watch.expired:
                raise TimeoutError
            if scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            conn = (http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection)(host, port)
            conn.sock = sock  # pinned: the checked address, with the name in Host (and for TLS, SNI and the certificate)
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"User-Agent": "duet-serve", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, resp.getheader("Location"), b""
            if (resp.length or 0) > policy.max_image_bytes:
                raise ImageRefused(f"{where}: {resp.length} bytes; the server accepts at most {policy.max_image_bytes}")
            chunks, size = [], 0
            while chunk := resp.read(65536):
                size += len(chunk)
                if size > policy.max_image_bytes:
                    raise ImageRefused(f"{where}: larger than the server's limit of {policy.max_image_bytes} bytes")
                chunks.append(chunk)
            if watch.expired:
                raise TimeoutError
            return 200, None, b"".join(chunks)
        except ImageRefused:
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            if watch.expired or isinstance(e, TimeoutError):
                raise ImageRefused(f"{where}: not fetched within {policy.fetch_timeout:g} s") from None
            raise ImageRefused(f"{where}: could not be fetched ({e})") from None
        finally:
            if conn is not None:
                conn.close()
            elif sock is not None:
                sock.close()


def resolve_image(ref: str, policy: ServePolicy) -> str:
    """An image reference → a checked inline data URL, or :class:`ImageRefused`."""
    scheme = urllib.parse.urlparse(ref).scheme.lower()
    if ref.startswith("data:"):
        data = decode_data_url(ref, policy.max_image_bytes)
    elif scheme in ("http", "https"):
        data = _fetch_allowed_url(ref, policy)
    elif scheme in ("file", ""):
        data = _read_allowed_file(ref, policy)
    else:
        raise ImageRefused(f"image URL scheme {scheme!r} is not accepted; send images inline as data: URLs")
    check_image(data, policy)
    from app.engine.serve_images import fit_to_budget  # the image work lives there; it imports this module

    fitted = fit_to_budget(data, policy)
    if fitted is not None:  # over the frame budget: what reaches the encoder is the session's frame size
        return "data:image/png;base64," + base64.b64encode(fitted).decode()
    return ref if ref.startswith("data:") else "data:image/png;base64," + base64.b64encode(data).decode()


def _image_slots(body: dict) -> list[tuple[dict, str]]:
    """Every (holder, key) where an image reference sits in an OpenAI chat request."""
    slots = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                iu = part.get("image_url")
                if isinstance(iu, dict):
                    slots.append((iu, "url"))
                else:
                    slots.append((part, "image_url"))
    return slots


def sanitize_chat(body: Any, policy: ServePolicy) -> dict:
    """Check and rewrite a chat request in place (images inline and checked, max_tokens capped)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ImageRefused("expected a JSON object with a 'messages' list")
    for i, m in enumerate(body["messages"]):  # refused here in words, not by the stock server's 500
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ImageRefused(f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if not (content is None or isinstance(content, str)
                or (isinstance(content, list) and all(isinstance(part, dict) for part in content))):
            raise ImageRefused(f"messages[{i}].content must be a string or a list of parts (objects)")
    slots = _image_slots(body)
    if len(slots) > policy.max_images:
        raise ImageRefused(f"{len(slots)} images in one request; the server accepts at most {policy.max_images}")
    for holder, key in slots:
        ref = holder.get(key)
        if not isinstance(ref, str):
            raise ImageRefused("an image_url must be a string or {'url': string}")
        holder[key] = resolve_image(ref, policy)
    mt = body.get("max_tokens")
    if mt is None or not isinstance(mt, int) or isinstance(mt, bool) or mt > policy.max_tokens:
        body["max_tokens"] = policy.max_tokens
    return body
