"""A loopback stand-in for the Hugging Face Hub: enough of its HTTP API for huggingface_hub's real client.

Serves, for each repository it holds, what ``HfApi.model_info(files_metadata=True)`` and
``hf_hub_download`` ask for:

* ``GET /api/models/<repo>[/revision/<rev>]``: id, commit sha and siblings with size, git blob id and,
  for large files, LFS sha256 — the metadata the hub really publishes;
* ``HEAD``/``GET /<repo>/resolve/<rev>/<file>``: ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` and the
  bytes, honouring ``Range`` (huggingface_hub resumes with it).

Faults are switched on per test: ``status`` (every request answers it: 401, 404, 429, 500 …),
``hang`` (accept the connection, never answer), ``corrupt`` (names whose bytes are altered while the
metadata stays right, as a broken mirror would), ``rate`` (bytes per second, so a test can kill a
pull mid-file) and ``token`` (requests without ``Authorization: Bearer <token>`` get 401). A hub that
misbehaves in other ways: ``api_body`` (the listing answered 200 with these bytes: a proxy's login page),
``endless_api`` (the listing's body never ends), ``no_hash`` (names listed without their LFS record, as a
mirror that leaves the hashes out), ``short`` (names served as their first half, the answer's length saying so)
and ``endless`` (names whose body never ends).

A hostile hub: a repository's names may be any string (``../../../../evil-q8_0.gguf``, an absolute
path); the HTTP client normalises the ``..`` out of the URL it requests, so ``by_path`` answers exact
request paths too (``/evil-q8_0.gguf``) with the listed name's bytes, as a hub that meant it would.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

COMMIT = "5d1a0e2b7c9f4a3e8d6b0c1f2e3d4c5b6a798081"
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Faults:
    status: int | None = None
    hang: bool = False
    corrupt: set[str] = field(default_factory=set)
    rate: int = 0  # bytes per second for file bodies; 0 = as fast as possible
    token: str | None = None
    api_body: bytes | None = None
    endless_api: bool = False
    no_hash: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)
    endless: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


class StandInHub:
    """``repos`` maps "owner/name" to {path in repo: bytes}. Use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.faults = Faults()
        self.by_path: dict[str, tuple[str, bytes]] = {}  # request path → (listed name, bytes): see above
        self._hung: list[threading.Event] = []
        self._closing = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                      head: bool = False, length: int | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _fault(self, head: bool) -> bool:
                f = hub.faults
                rng = self.headers.get("Range")
                f.requests.append(f"{self.command} {self.path}" + (f" Range: {rng}" if rng else ""))
                if f.hang:
                    ev = threading.Event()
                    hub._hung.append(ev)
                    ev.wait(120)
                    return True
                if f.status:
                    msg = json.dumps({"error": f"stand-in hub answers {f.status}"}).encode()
                    self._send(f.status, msg, {"Content-Type": "application/json", "X-Repo-Commit": COMMIT}, head)
                    return True
                if f.token and self.headers.get("Authorization") != f"Bearer {f.token}":
                    self._send(401, b'{"error":"Invalid credentials"}', {"Content-Type": "application/json"}, head)
                    return True
                return False

            def _endless(self) -> None:
                """200 with a body that never ends (no length: it lasts until the client hangs up)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                piece = b"x" * 65536
                while not hub._closing.is_set():
                    self.wfile.write(piece)

            def _api(self, head: bool) -> None:
                if hub.faults.endless_api:
                    self._endless()
                    return
                if hub.faults.api_body is not None:
                    self._send(200, hub.faults.api_body, {"Content-Type": "text/html"}, head)
                    return
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/?]+))?(?:\?.*)?", self.path)
                if not m or m.group(1) not in hub.repos:
                    self._send(404, b'{"error":"Repository not found"}',
                               {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, head)
                    return
                rev = m.group(2) or "main"
                if rev not in ("main", COMMIT):
                    self._send(404, b'{"error":"Invalid rev id"}',
                               {"Content-Type": "application/json", "X-Error-Code": "RevisionNotFound"}, head)
                    return
                siblings = []
                for name, data in sorted(hub.repos[m.group(1)].items()):
                    s = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
                    if name.endswith(LFS_SUFFIXES) and name not in hub.faults.no_hash:
                        s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                        s["blobId"] = git_blob_id(b"version https://git-lfs.github.com/spec/v1\n")
                    siblings.append(s)
                body = json.dumps({"id": m.group(1), "modelId": m.group(1), "sha": COMMIT, "private": False,
                                   "siblings": siblings}).encode()
                self._send(200, body, {"Content-Type": "application/json"}, head)

            def _resolve(self, head: bool) -> None:
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+?)(?:\?.*)?", self.path)
                files = hub.repos.get(m.group(1)) if m else None
                data = files.get(m.group(3)) if files is not None else None
                raw = hub.by_path.get(self.path.split("?")[0])
                if raw is not None:
                    name, data = raw
                elif m is None or data is None or m.group(2) not in ("main", COMMIT):
                    self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT},
                               head)
                    return
                else:
                    name = m.group(3)
                sha = hashlib.sha256(data).hexdigest()
                etag = sha if name.endswith(LFS_SUFFIXES) else git_blob_id(data)
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                if name.endswith(LFS_SUFFIXES):
                    headers["X-Linked-Etag"] = f'"{sha}"'
                    headers["X-Linked-Size"] = str(len(data))
                if name in hub.faults.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng and (rm := re.fullmatch(r"bytes=(\d+)-", rng)):
                    start = int(rm.group(1))
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                if head:
                    self._send(200, b"", headers, head=True, length=len(data))
                    return
                if name in hub.faults.endless:
                    self._endless()
                    return
                if name in hub.faults.short:  # a whole answer, of half the file: its length says so too
                    body = body[:len(body) // 2]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = max(1, hub.faults.rate // 20) if hub.faults.rate else 1 << 20
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    if hub.faults.rate:
                        time.sleep(step / hub.faults.rate)

            def _handle(self, head: bool) -> None:
                try:
                    if self._fault(head):
                        return
                    if self.path.startswith("/api/"):
                        self._api(head)
                    else:
                        self._resolve(head)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._handle(False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._handle(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        for ev in self._hung:
            ev.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hub_for_duet(repos: dict[str, dict[str, bytes]], monkeypatch: Any, *, timeout: float = 5) -> Iterator[StandInHub]:
    """The stand-in hub serving ``repos``, with Duet's hub client pointed at it: HF_ENDPOINT set, offline mode and any
    token off, and hub requests timed out after ``timeout`` seconds (a hung stand-in fails the test quickly)."""
    from huggingface_hub import constants

    with StandInHub(repos) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("DUET_HUB_TIMEOUT", str(timeout))
        yield h


def partial_bytes(root: Path) -> int:
    """The largest ``*.part`` download under ``root``, in bytes (0 if none).

    A client moves each finished part into place while a test polls, so a part listed may be gone by
    the time it is measured: that one counts as 0, never as an error that ends the poll.
    """
    largest = 0
    for p in root.rglob("*.part"):
        try:
            largest = max(largest, p.stat().st_size)
        except FileNotFoundError:
            pass
    return largest


def repo_from_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (a checkpoint directory) as the repository's contents."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    """Serve a folder as ``owner/name`` for trying ``duet models pull`` by hand (see docs/models.md)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("folder")
    ap.add_argument("--rate", type=int, default=0)
    a = ap.parse_args()
    with StandInHub({a.repo: repo_from_folder(Path(a.folder))}) as hub:
        hub.faults.rate = a.rate
        print(hub.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
