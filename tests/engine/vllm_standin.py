"""A stand-in for ``vllm serve`` in the supervision tests: a real HTTP server on the port Duet asks for.

It takes the command line Duet builds (``serve MODEL --host H --port P …``), writes what it was given (its argv and
whether ``VLLM_API_KEY`` came by environment) to ``$STANDIN_RECORD`` (one JSON line per start), answers
``/health`` and, with the key, ``/v1/models`` as vLLM does (``owned_by: vllm``). ``$STANDIN_MODE`` makes it
misbehave: ``crash`` exits with status 1 at once, ``hang`` answers ``/health`` with 500 after the first
``$STANDIN_HEALTHY`` answers (an engine stuck in a kernel). Not vLLM: what vLLM does with a model is tested with
vLLM itself (tests/engine/test_vllm_real.py) when its environment exists.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys

p = argparse.ArgumentParser()
p.add_argument("cmd")
p.add_argument("model")
p.add_argument("--host")
p.add_argument("--port", type=int)
p.add_argument("--served-model-name")
a, rest = p.parse_known_args()
with open(os.environ["STANDIN_RECORD"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "key": os.environ.get("VLLM_API_KEY"), "pid": os.getpid()}) + "\n")
mode = os.environ.get("STANDIN_MODE", "")
if mode == "crash":
    sys.exit(1)
healthy = [int(os.environ.get("STANDIN_HEALTHY", "1000000"))]
key = os.environ["VLLM_API_KEY"]


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/health":
            healthy[0] -= 1
            return self._send(200 if mode != "hang" or healthy[0] >= 0 else 500, {})
        if self.headers.get("Authorization") != f"Bearer {key}":
            return self._send(401, {"error": "Unauthorized"})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": a.served_model_name, "owned_by": "vllm"}]})
        return self._send(404, {})

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()
