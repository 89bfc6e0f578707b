"""A loopback stand-in for huggingface.co serving one file, enough for hf_hub_download (HEAD + GET)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(files: dict[str, bytes]) -> tuple[ThreadingHTTPServer, str]:
    """``files`` maps "<repo>/resolve/main/<name>" to bytes; returns the server and its endpoint URL."""
    commit = "0123456789abcdef0123456789abcdef01234567"

    class Handler(BaseHTTPRequestHandler):
        def _headers(self, body: bytes | None) -> None:
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def _body(self) -> bytes | None:
            return files.get(self.path.lstrip("/").split("?")[0])

        def do_HEAD(self) -> None:  # noqa: N802
            self._headers(self._body())

        def do_GET(self) -> None:  # noqa: N802
            body = self._body()
            self._headers(body)
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
