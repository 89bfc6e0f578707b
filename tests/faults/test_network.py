"""Fault catalogue, part 5: ``duet serve`` refusing bad setups, and ``duet run --remote`` against
servers that misbehave (real HTTP servers on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.engine.loopback import chat_reply, listening_port, refused_port, send_json, serve_http

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("extra", "env", "message"), [
    (["--allow-files", "/nonexistent/folder"], {}, "--allow-files /nonexistent/folder: not a folder"),
    (["--max-body-mb", "0"], {}, "--max-body-mb must be within 0.01 to 4096 MB, got 0.0"),
    (["--timeout", "-1"], {}, "--timeout must be within 1 to 86400 s, got -1.0"),
    (["--max-tokens", "0"], {}, "--max-tokens must be within 1 to 32768 tokens, got 0"),
    (["--tokens-per-image", "2000"], {}, "--tokens-per-image must be within 4 to 1024 tokens, got 2000"),
    (["--cors-origin", "*"], {}, "--cors-origin '*': name each allowed origin as scheme://host[:port]"),
    (["--cors-origin", "https://ok.example", "--cors-origin", "https://x.example/path"], {}, "'https://x.example/path'"),
    ([], {"DUET_SERVE_API_KEY": "short"}, "DUET_SERVE_API_KEY must be 16 to 512 printable ASCII characters"),
    ([], {"DUET_SERVE_API_KEY": "clé-très-secrète-ünïcode"}, "DUET_SERVE_API_KEY must be 16 to 512 printable ASCII"),
])
def test_serve_refuses_bad_settings(extra, env, message, run, data_dir, tiny_model, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = run("serve", "--model", tiny_model.model, "--mmproj", tiny_model.mmproj, *extra)
    assert (r.rc, message in r.err) == (2, True), r.err


def test_serve_refuses_a_swapped_pair(run, data_dir, tiny_model):
    r = run("serve", "--model", tiny_model.mmproj, "--mmproj", tiny_model.model)
    assert r.rc == 2 and "not the text model; swap the two files" in r.err


def test_serve_refuses_a_pair_that_does_not_belong_together(run, data_dir, tiny_model, tmp_path):
    from app.modelhub.tiny import TinySpec, build_tiny

    other = build_tiny(TinySpec(hidden=96, heads=4, kv_heads=2, ffn=256, mrope_section=[2, 5, 5]),
                       cache_dir=tmp_path / "other")
    r = run("serve", "--model", tiny_model.model, "--mmproj", other.mmproj)
    assert r.rc == 2 and "does not belong to" in r.err and "projects to 96 dimensions" in r.err


def test_duet_serve_end_to_end_generates_a_private_key_and_requires_it(tiny_model, tmp_path):
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    env.pop("DUET_SERVE_API_KEY", None)
    # Port 0: the kernel picks a free port as uvicorn binds (no free-then-reuse race); read back from /proc.
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model), "--mmproj",
                             str(tiny_model.mmproj), "--port", "0", "--gpu-layers", "0", "--n-ctx", "1024"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = listening_port(proc)
        key_file = tmp_path / "data" / "serve-api-key"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                pytest.fail("duet serve answered /v1/models without an API key")
            except urllib.error.HTTPError as e:
                assert e.code == 401
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        key = key_file.read_text().strip()
        assert key_file.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
        # the model is named after what is served (here a GGUF path: its file's stem), not "mmduet2"
        listed = json.loads(urllib.request.urlopen(req, timeout=5).read())["data"]
        assert [m["id"] for m in listed] == [tiny_model.model.stem]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"new API key (stored in {key_file}, readable by you only):\n    {key}" in err
    assert f"on http://127.0.0.1:{port}/v1" in err  # --port 0: the port the kernel chose, not 0


def test_serve_says_at_once_that_its_port_is_taken(run, data_dir, tiny_model):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("serve", "--model", tiny_model.model, "--mmproj", tiny_model.mmproj, "--port", port)
    assert r.rc == 2, r.err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use. Choose another --port" in r.err


def test_duet_serve_cancels_a_chat_whose_client_leaves_and_serves_the_next(tiny_model, tmp_path):
    """The real ``duet serve`` process: a client closes its socket mid-generation; the server says so
    on stderr, ends that generation, and answers the next chat."""
    import base64
    import socket

    key = "c" * 32
    env = {**os.environ, "DUET_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO), "DUET_SERVE_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--model", str(tiny_model.model), "--mmproj",
                             str(tiny_model.mmproj), "--port", "0", "--gpu-layers", "0", "--n-ctx", "8192",
                             "--max-tokens", "8000", "--alias", "mmduet2"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    # stderr read as it comes: the test closes its socket only once the chat is provably on the model.
    # llama.cpp's multimodal helper logs "image decoded" while it evaluates the prompt (even with
    # verbose=False), i.e. after the guard has handed the chat to the model; closing earlier would test
    # the silent "client left before its body was read" path or the "dropped while queued" one instead.
    err_lines: list[str] = []
    on_model = threading.Event()

    def pump() -> None:
        for line in proc.stderr:
            err_lines.append(line)
            if "image decoded" in line:
                on_model.set()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    png = "data:image/png;base64," + base64.b64encode(_png(64, 48)).decode()

    def body(max_tokens: int) -> bytes:
        return json.dumps({"model": "mmduet2", "max_tokens": max_tokens, "temperature": 0.0, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}},
                                         {"type": "text", "text": "What is happening?"}]}]}).encode()

    def chat(max_tokens: int) -> urllib.request.Request:
        return urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body(max_tokens),
                                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        port = listening_port(proc)  # port 0 above: the kernel's pick, read back from /proc
        data = body(8000)  # with n_ctx 8192 the random tiny model would talk for minutes
        leaver = socket.create_connection(("127.0.0.1", port), timeout=30)
        leaver.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        assert on_model.wait(120), "the chat never reached the model:\n" + "".join(err_lines)[-3000:]
        leaver.close()
        answer = json.loads(urllib.request.urlopen(chat(4), timeout=120).read())
        assert isinstance(answer["choices"][0]["message"]["content"], str)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        pumper.join(timeout=30)
    err = "".join(err_lines)
    lines = [ln for ln in err.splitlines() if ln.startswith("WARNING duet.serve")]
    assert lines[0].startswith("WARNING duet.serve: client 127.0.0.1:")
    assert lines[0].endswith(" closed the connection during its chat; ending the generation"), err[-3000:]
    n = int(lines[1].removeprefix("WARNING duet.serve: generation cancelled after ").split()[0])
    assert lines[1] == f"WARNING duet.serve: generation cancelled after {n} tokens: the client went away"
    assert n < 8000 and len(lines) == 2 and "Traceback" not in err


# ---- duet run --remote against misbehaving servers -------------------------------------------------
def _garbage(h, rec):
    send_json(h, 200, b"\x00\xffnot json at all")


def _refuse(h, rec):
    send_json(h, 401, {"error": {"message": "invalid api key"}})


def _crash(h, rec):
    send_json(h, 500, b"Internal Server Error")


def _evil(h, rec):
    send_json(h, 200, chat_reply("Hello\x1b[2J\x1b]0;owned\x07 there\x1b[?1049h"))


def _redirect(h, rec):
    send_json(h, 307, {}, {"Location": "http://192.0.2.1:9/v1/chat/completions"})


REMOTE_CASES = {
    "garbage body": (_garbage, 2, "answered with something that is not JSON"),
    "401": (_refuse, 2, "refused the request (HTTP 401): {\"error\": {\"message\": \"invalid api key\"}}"),
    "500 every time": (_crash, 2, "is not answering (HTTP 500: Internal Server Error); is the server running?"),
    "redirect elsewhere": (_redirect, 2, "redirected to another server (http://192.0.2.1:9); refused"),
    "escape sequences": (_evil, 0, None),
}


@pytest.mark.parametrize("case", REMOTE_CASES)
def test_run_remote_against_misbehaving_servers(case, run, data_dir, vtest_avi):
    handle, rc, message = REMOTE_CASES[case]
    with serve_http(handle) as (base, rec):
        r = run("run", "--source", vtest_avi, "--remote", f"{base}/v1", "--remote-model", "mmduet2", "--fast",
                "--max-turns", "1", "--ask", "hi")
    assert r.rc == rc, r.err
    if message:
        assert f"{base}/v1/chat/completions" in r.err and message in r.err
    else:
        assert "\x1b" not in r.out + r.err and "[00:02] Hello there" in r.out
    assert len(rec.requests) >= 1


def test_run_remote_with_nothing_listening(run, data_dir, vtest_avi):
    with refused_port() as port:  # bound, never listening: refused for the whole run, and nobody else's
        url = f"http://127.0.0.1:{port}/v1"
        r = run("run", "--source", vtest_avi, "--remote", url, "--remote-model", "mmduet2", "--fast",
                "--max-turns", "1")
        assert r.rc == 2 and f"{url}/chat/completions is not answering (" in r.err
        # no model named: the server is asked which it serves, and that is what fails
        r = run("run", "--source", vtest_avi, "--remote", url, "--fast", "--max-turns", "1")
    assert r.rc == 2 and f"{url}/models is not answering (" in r.err


def _lists(*names: str):
    def handle(h, rec):
        if h.command == "GET":
            send_json(h, 200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
        else:
            send_json(h, 200, chat_reply("A red square appeared."))
    return handle


def test_run_remote_sends_the_model_the_server_lists(run, data_dir, vtest_avi):
    """No --remote-model: the name comes from the server's /v1/models (duet serve names its model after
    what it serves, and refuses requests naming another), and the session records it."""
    with serve_http(_lists("demo")) as (base, rec):
        r = run("run", "--source", vtest_avi, "--remote", f"{base}/v1", "--fast", "--max-turns", "1",
                "--ask", "hi")
    assert r.rc == 0, r.err
    first_two = [(m, p) for m, p, _ in rec.requests][:2]
    assert first_two == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    with serve_http(_lists("a", "b")) as (base, rec):
        r = run("run", "--source", vtest_avi, "--remote", f"{base}/v1", "--fast", "--max-turns", "1")
    assert r.rc == 2
    assert f"{base}/v1/models lists 2 models ('a', 'b'); name the one to use (--remote-model)" in r.err
    assert [m for m, _, _ in rec.requests] == ["GET"]


# ---- duet serve --allow-urls: every redirect hop checked -------------------------------------------
def _png(w: int = 8, h: int = 6) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _site(routes: dict[str, object], other: str = ""):
    """A handler answering each path from ``routes``: ("redirect", Location), ("png",), ("status", n),
    ("slow-redirect", seconds, Location), ("trickle", seconds per byte), ("big", declared bytes),
    ("chunked", bytes). In a Location, ``{base}`` is this server's base URL, ``{other}`` the second's."""
    def handle(h, rec):
        route = routes.get(h.path.split("?")[0], ("status", 404))
        kind = route[0]
        if kind in ("redirect", "slow-redirect"):
            if kind == "slow-redirect":
                time.sleep(route[1])
            h.send_response(302)
            if route[-1] is not None:
                h.send_header("Location", route[-1].replace("{other}", other).replace(
                    "{base}", "http://" + h.headers["Host"]))
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif kind == "png":
            data = _png()
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        elif kind == "trickle":
            h.send_response(200)
            h.send_header("Content-Length", "1000")
            h.end_headers()
            for _ in range(200):
                try:
                    h.wfile.write(b"\0")
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(route[1])
        elif kind == "big":
            h.send_response(200)
            h.send_header("Content-Length", str(route[1]))
            h.end_headers()
        elif kind == "chunked":
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            block = b"\0" * 8192
            for _ in range(route[1] // len(block)):
                try:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                except OSError:
                    return
            h.wfile.write(b"0\r\n\r\n")
        else:
            h.send_error(route[1])
    return handle


TOO_MANY = {f"/h{i}": ("redirect", f"/h{i + 1}") for i in range(6)}
# Each hop is quick enough on its own (2 s), the chain is not (3 hops ≥ 6 s > the 5.5 s FETCH_TIMEOUT for the
# whole fetch). The cut always comes in /h2: the chain cannot be faster than its sleeps, and two hops
# (4 s) leave 1.5 s of the deadline for a loaded machine's overhead before /h2 is asked for.
FETCH_TIMEOUT = 5.5
SLOW_CHAIN = {"/h0": ("slow-redirect", 2.0, "/h1"), "/h1": ("slow-redirect", 2.0, "/h2"),
              "/h2": ("slow-redirect", 2.0, "/img"), "/img": ("png",)}

# case: (routes of the allowed server at 127.0.0.1, first path, expected message or None = fetched,
#        paths the allowed server must have seen, whether the non-allowed server at 127.0.0.2 saw anything)
SERVE_URL_CASES = {
    "a chain of redirects to an image": (
        {"/a": ("redirect", "/b"), "/b": ("redirect", "{base}/c"), "/c": ("png",)}, "/a", None, ["/a", "/b", "/c"]),
    "redirect to file:": (
        {"/a": ("redirect", "file:///etc/passwd")}, "/a",
        "{base}/a (redirected to file:///etc/passwd): scheme 'file' is not fetched (http and https only)", ["/a"]),
    "redirect to ftp:": (
        {"/a": ("redirect", "ftp://127.0.0.1/x.png")}, "/a",
        "{base}/a (redirected to ftp://127.0.0.1/x.png): scheme 'ftp' is not fetched (http and https only)",
        ["/a"]),
    "redirect to a loopback address not allowed": (
        {"/a": ("redirect", "{other}/secret.png")}, "/a",
        "{base}/a (redirected to {other}/secret.png): 127.0.0.2 is 127.0.0.2, a loopback, private or otherwise "
        "non-public address; this server fetches only public addresses (start it with --allow-url-net "
        "127.0.0.2/32 to allow it)", ["/a"]),
    "redirect to the cloud metadata address": (
        {"/a": ("redirect", "http://169.254.169.254/latest/meta-data/")}, "/a",
        "{base}/a (redirected to http://169.254.169.254/latest/meta-data/): 169.254.169.254 is 169.254.169.254, "
        "a loopback, private or otherwise non-public address", ["/a"]),
    "redirect to an IPv4-mapped IPv6 loopback": (
        {"/a": ("redirect", "http://[::ffff:127.0.0.2]:9/x.png")}, "/a",
        "127.0.0.2 is ::ffff:127.0.0.2, a loopback, private or otherwise non-public address", ["/a"]),
    "more redirects than allowed": (
        TOO_MANY, "/h0", "{base}/h0: more than 3 redirects; not followed further", ["/h0", "/h1", "/h2", "/h3"]),
    "a redirect loop": (
        {"/a": ("redirect", "/a")}, "/a", "{base}/a: more than 3 redirects; not followed further", ["/a"] * 4),
    "the time limit covers the whole chain": (
        SLOW_CHAIN, "/h0", "{base}/h0 (redirected to {base}/h2): not fetched within 5.5 s", ["/h0", "/h1", "/h2"]),
    "a body trickled after a redirect": (
        {"/a": ("redirect", "/slow"), "/slow": ("trickle", 0.2)}, "/a",
        "{base}/a (redirected to {base}/slow): not fetched within 5.5 s", ["/a", "/slow"]),
    "a declared size over the limit after a redirect": (
        {"/a": ("redirect", "/big"), "/big": ("big", 10_000_000)}, "/a",
        "{base}/a (redirected to {base}/big): 10000000 bytes; the server accepts at most 65536", ["/a", "/big"]),
    "an undeclared size over the limit after a redirect": (
        {"/a": ("redirect", "/big"), "/big": ("chunked", 1_000_000)}, "/a",
        "{base}/a (redirected to {base}/big): larger than the server's limit of 65536 bytes", ["/a", "/big"]),
    "a redirect without a Location": (
        {"/a": ("redirect", None)}, "/a", "{base}/a: a redirect (302) without a Location", ["/a"]),
    "a Location with a port that is not a number": (
        {"/a": ("redirect", "http://127.0.0.1:http/x.png")}, "/a",
        "{base}/a (redirected to http://127.0.0.1:http/x.png): Port could not be cast to integer value", ["/a"]),
    "a redirect to a missing image": (
        {"/a": ("redirect", "/gone")}, "/a", "{base}/a (redirected to {base}/gone): answered HTTP 404",
        ["/a", "/gone"]),
}


@pytest.mark.parametrize("case", SERVE_URL_CASES)
def test_serve_checks_every_redirect_hop(case):
    import ipaddress

    from app.engine.serve import ImageRefused, ServePolicy, resolve_image

    routes, first, message, seen = SERVE_URL_CASES[case]
    policy = ServePolicy(api_key="k" * 32, allow_urls=True, url_networks=(ipaddress.ip_network("127.0.0.1/32"),),
                         fetch_timeout=FETCH_TIMEOUT, max_image_bytes=65536)
    other_handle = _site({"/secret.png": ("png",)})
    with serve_http(other_handle, host="127.0.0.2") as (other, other_rec):
        with serve_http(_site(routes, other)) as (base, rec):
            if message is None:
                url = resolve_image(base + first, policy)
                assert url.startswith("data:image/png;base64,")
            else:
                with pytest.raises(ImageRefused) as e:
                    resolve_image(base + first, policy)
                assert message.format(base=base, other=other) in str(e.value)
        time.sleep(0.05)  # a cut-off request handler finishes recording
        assert [r[1] for r in rec.requests] == seen
    assert other_rec.requests == []  # the address the policy does not allow was never reached


@pytest.fixture
def loopback_cert(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (certificate file, key file)."""
    import shutil

    assert shutil.which("openssl"), "needs the openssl command (`make sysdeps` installs it)"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


def test_serve_fetches_https_with_the_certificate_checked(loopback_cert, monkeypatch):
    """The connection is pinned to the checked address, and TLS still verifies the name: a
    certificate the system does not trust is refused; trusted (SSL_CERT_FILE), the image is served
    across an https → https redirect."""
    import ipaddress

    from app.engine.serve import ImageRefused, ServePolicy, resolve_image

    policy = ServePolicy(api_key="k" * 32, allow_urls=True, url_networks=(ipaddress.ip_network("127.0.0.1/32"),),
                         fetch_timeout=5.0)
    with serve_http(_site({"/a": ("redirect", "/b.png"), "/b.png": ("png",)}), tls=loopback_cert) as (base, rec):
        assert base.startswith("https://127.0.0.1:")
        with pytest.raises(ImageRefused, match=r"/a: could not be fetched \(.*CERTIFICATE_VERIFY_FAILED"):
            resolve_image(f"{base}/a", policy)
        monkeypatch.setenv("SSL_CERT_FILE", loopback_cert[0])  # OpenSSL's default trust store, read per context
        assert resolve_image(f"{base}/a", policy).startswith("data:image/png;base64,")
    assert [r[1] for r in rec.requests] == ["/a", "/b.png"]  # the refused handshake sent no request


def test_serve_with_allow_urls_alone_reaches_no_loopback_address():
    from app.engine.serve import ImageRefused, ServePolicy, resolve_image

    policy = ServePolicy(api_key="k" * 32, allow_urls=True)
    with serve_http(_site({"/x.png": ("png",)})) as (base, rec):
        for url in (f"{base}/x.png", base.replace("127.0.0.1", "localhost") + "/x.png"):
            with pytest.raises(ImageRefused, match="non-public address; this server fetches only public addresses"):
                resolve_image(url, policy)
    assert rec.requests == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--allow-urls", "--allow-url-net", "192.168.1.0/33"], "--allow-url-net 192.168.1.0/33: not a network"),
    (["--allow-url-net", "127.0.0.1"], "--allow-url-net only widens --allow-urls; add --allow-urls"),
])
def test_serve_refuses_bad_url_networks(extra, message, run, data_dir, tiny_model):
    r = run("serve", "--model", tiny_model.model, "--mmproj", tiny_model.mmproj, *extra)
    assert (r.rc, message in r.err) == (2, True), r.err
