"""Talking to the Hugging Face Hub (or a mirror named by ``HF_ENDPOINT``) through huggingface_hub.

What huggingface_hub does not do and this module adds:

* **Verification.** ``hf_hub_download`` accepts whatever bytes a server sends. Every file fetched here
  is hashed and compared with the hub's own metadata from the repository listing
  (``model_info(files_metadata=True)``): the LFS ``sha256`` for large files, and for small files kept
  in git (``config.json`` …), which the hub lists only by their git blob id, the git blob SHA-1
  (``sha1("blob <size>\\0" + bytes)``). A mismatch deletes the file and raises.
* **Names are checked.** A repository listing is someone else's data, and its file names become
  paths under the pull's folder: a name that is absolute, has a ``..`` part, a backslash or a NUL
  (``../../../../evil.gguf``, ``/home/you/.bashrc``) would be written, verified (and on a size
  mismatch deleted) or moved *outside* it. Every name is refused unless it is a plain relative
  name (:func:`app.core.paths.plain_relative_name`) — when the listing arrives, when a saved listing is
  read back, and again before each file operation.
* **One error per cause.** 401, 403/gated, 404, 429, 5xx, no answer within the timeout, no
  connection, offline mode, a full disk (how much was needed and free, where), an answer that is not
  JSON and a body cut short each become a :class:`HubError` whose message says what to do in words
  (never huggingface_hub's own advice, such as ``force_download=True``, which is no option of Duet's).
* **Bounded.** The listing is read up to :data:`LISTING_MAX_BYTES` within :data:`LISTING_DEADLINE`
  (an endless ``/api/models`` body grew memory without limit); a file's body is taken up to the size
  the listing gives it, never more (an endless body would fill the disk).

Resuming across processes is done here (see :func:`download`): huggingface_hub ≥ 2 resumes only
inside the process that started a download.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from app.core.errors import ResourceError
from app.core.paths import UnsafeName, plain_relative_name

# Bytes huggingface_hub hands over (and Duet counts, and may pause at) at a time. At 1 MB the first
# progress report came after ~25 s at 40 KB/s; at 64 KB it comes after 1.6 s there (not benchmarked at
# LAN speed: a callback and a write per 64 KB).
CHUNK = 64 * 1024
LISTING_MAX_BYTES = 32 * 2**20  # a listing of 10,000 files with hashes is ~3 MB; more is not a listing
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")
LISTING_DEADLINE = 120.0  # seconds for the whole listing, however slowly it trickles
DEFAULT_TIMEOUT = 20.0  # seconds without a byte from the server before giving up (not the whole download)


class HubError(ResourceError):
    """A download problem with a cause (``kind``) and a message that says what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # offline | unauthorized | forbidden | not_found | rate_limited | server | timeout
        # | connection | integrity (bytes differ from the hub's hash or size) | unverifiable (no hash
        # published) | disk | bad_repo


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository at a fixed commit, with what the hub says its content is."""

    name: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob SHA-1 (every file; the only hash the hub gives for non-LFS files)

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "blob_id": self.blob_id}

    @classmethod
    def from_json(cls, d: dict) -> RemoteFile:
        """A file of a listing saved earlier (a pull's state): its name is checked again, as on arrival."""
        return cls(checked_name(d["name"]), int(d["size"]), d.get("sha256"), d.get("blob_id"))


def checked_name(name: object, repo: str = "") -> str:
    """A hub's file name if it is a plain relative name inside the download folder, else HubError bad_repo."""
    try:
        return plain_relative_name(name, "file name")
    except UnsafeName as e:
        where = f"{repo}: " if repo else ""
        raise HubError("bad_repo",
                       f"{where}the hub lists a file named {name!r}, which is not a plain relative name "
                       f"({e.reason}); Duet refuses to download it (a name from a hub must stay inside its "
                       "folder). Nothing was written.") from None


@dataclass(frozen=True)
class RepoListing:
    repo: str
    commit: str
    files: tuple[RemoteFile, ...]


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _timeout() -> float:
    return float(os.environ.get("DUET_HUB_TIMEOUT", DEFAULT_TIMEOUT))


def explain(e: BaseException, repo: str) -> HubError:
    """Map a huggingface_hub / HTTP exception to a :class:`HubError` with an actionable message."""
    import httpx2
    from huggingface_hub import errors as hfe

    where = endpoint()
    if isinstance(e, HubError):
        return e
    if isinstance(e, json.JSONDecodeError) or (isinstance(e, UnicodeDecodeError)):
        return HubError("server", f"{repo}: {where} answered with something that is not the hub's JSON; is "
                                  "HF_ENDPOINT a Hugging Face Hub or a mirror of it (a proxy's login page, a web "
                                  "server)? Check HF_ENDPOINT and your proxy, then run the same command again.")
    if isinstance(e, hfe.OfflineModeIsEnabled) or offline():
        return HubError("offline", f"{repo}: offline mode is on (HF_HUB_OFFLINE=1), so nothing can be downloaded. "
                                   "Unset HF_HUB_OFFLINE to download; models already in the library still work.")
    if isinstance(e, hfe.GatedRepoError):
        return HubError("forbidden", f"{repo} is gated: accept its terms on its page at {where}, then set HF_TOKEN "
                                     "to a token of that account.")
    if isinstance(e, hfe.RevisionNotFoundError):
        return HubError("not_found", f"{repo}: no such revision; check --revision (a branch, tag or commit).")
    status = None
    resp = getattr(e, "response", None)
    if resp is not None:
        status = getattr(resp, "status_code", None)
    if isinstance(e, hfe.RepositoryNotFoundError) and status in (None, 404):
        return HubError("not_found", f"{repo}: no such repository at {where}. Check the name (owner/name); "
                                     "if it is private, set HF_TOKEN.")
    if status == 401:
        token = "HF_TOKEN is set but was refused: create a new token" if os.environ.get("HF_TOKEN") else \
            "the repository is private or gated: set HF_TOKEN to a read token"
        return HubError("unauthorized", f"{repo}: 401 Unauthorized from {where}; {token} "
                                        "(https://huggingface.co/settings/tokens).")
    if status == 403:
        return HubError("forbidden", f"{repo}: 403 Forbidden from {where}; your token has no access to this "
                                     "repository (accept its terms on its page, or use a token with read access).")
    if status == 404:
        return HubError("not_found", f"{repo}: 404 Not Found at {where}. Check the repository name and --revision.")
    if status == 429:
        return HubError("rate_limited", f"{repo}: 429 Too Many Requests from {where}; the hub is rate-limiting you. "
                                        "Wait a few minutes and run the same command again (it resumes); "
                                        "setting HF_TOKEN raises the limit.")
    if status is not None and status >= 500:
        return HubError("server", f"{repo}: the hub answered {status} (a server error at {where}). Nothing is "
                                  "wrong on your side: try again later; the pull resumes where it stopped.")
    if isinstance(e, httpx2.TimeoutException):
        return HubError("timeout", f"{repo}: {where} did not answer within {_timeout():g} s. Check your network "
                                   "or proxy (or HF_ENDPOINT), then run the same command again; it resumes.")
    if isinstance(e, (httpx2.ConnectError, httpx2.NetworkError, ConnectionError)):
        return HubError("connection", f"{repo}: cannot connect to {where} ({e}). Check your network, proxy or "
                                      "HF_ENDPOINT; run the same command again to resume.")
    if isinstance(e, hfe.HfHubHTTPError):
        return HubError("server", f"{repo}: the hub refused the request: {e}")
    if isinstance(e, (hfe.LocalEntryNotFoundError, hfe.FileMetadataError)):
        return HubError("connection", f"{repo}: cannot reach {where} ({e}). Check your network, proxy or "
                                      "HF_ENDPOINT; run the same command again to resume.")
    return HubError("connection", f"{repo}: download failed: {_without_hf_advice(str(e))}. Run the same command "
                                  "again; it resumes.")


def _without_hf_advice(text: str) -> str:
    """huggingface_hub's message without its advice for its own API (``force_download=True`` is not a Duet option)."""
    text = re.sub(r"\s*(?:Please )?retry with `?force_download=True`?\.?", "", text, flags=re.IGNORECASE)
    return " ".join(text.split()).rstrip(".")


def list_repo(repo: str, revision: str = "main") -> RepoListing:
    """The repository's files at ``revision`` with their sizes and hashes, and the commit it resolves to."""
    from urllib.parse import quote

    from huggingface_hub.hf_api import ModelInfo

    if offline():
        raise explain(OSError("offline"), repo)
    url = f"{endpoint()}/api/models/{repo}/revision/{quote(revision, safe='')}"
    try:  # what HfApi.model_info(files_metadata=True) asks, read with a bound (it reads any body whole)
        info = ModelInfo(**json.loads(_get_bounded(url, {"blobs": True}, repo)))
    except Exception as e:  # every failure becomes a HubError with its cause
        raise explain(e, repo) from e
    if not info.sha:
        raise HubError("bad_repo", f"{repo}: the hub's answer has no commit id; is HF_ENDPOINT a Hub mirror?")
    files = []
    for s in info.siblings or []:
        name = checked_name(s.rfilename, repo)
        # A weights file is kept in LFS: without its LFS record (a mirror that leaves it out) its git blob id
        # is that of the LFS pointer, not of the bytes; comparing with it would blame an honest download.
        blob = None if s.lfs is None and name.lower().endswith(WEIGHT_SUFFIXES) else s.blob_id
        files.append(RemoteFile(name, int(s.lfs.size if s.lfs else (s.size or 0)),
                                s.lfs.sha256 if s.lfs else None, blob))
    return RepoListing(repo, info.sha, tuple(files))


def _get_bounded(url: str, params: dict, repo: str) -> bytes:
    """GET ``url`` through huggingface_hub's client (its headers, token, proxies): at most
    :data:`LISTING_MAX_BYTES` of body within :data:`LISTING_DEADLINE`, else :class:`HubError`.
    Errors are raised as huggingface_hub raises them (404 → ``RepositoryNotFoundError`` …)."""
    import httpx2
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    start = time.monotonic()
    with get_session().stream("GET", url, headers=build_hf_headers(), params=params, timeout=_timeout()) as r:
        body = bytearray()
        for chunk in r.iter_bytes():
            body += chunk
            if len(body) > LISTING_MAX_BYTES:
                raise HubError("server", f"{repo}: {endpoint()} sent a listing larger than "
                                         f"{LISTING_MAX_BYTES // 2**20} MB (a real one is a few MB at most); is "
                                         "HF_ENDPOINT a Hugging Face Hub or a mirror of it? Nothing was downloaded.")
            if time.monotonic() - start > LISTING_DEADLINE:
                raise HubError("timeout", f"{repo}: {endpoint()} did not finish sending the repository listing "
                                          f"within {LISTING_DEADLINE:g} s. Check your network, proxy or HF_ENDPOINT, "
                                          "then run the same command again.")
        # hf_raise_for_status reads an error's body: hand it the bounded copy, never the stream
        hf_raise_for_status(httpx2.Response(r.status_code, headers=r.headers, content=bytes(body),
                                            request=r.request))
    return bytes(body)


def file_digest(path: Path, remote: RemoteFile, progress: Callable[[int], None] | None = None) -> tuple[str, str]:
    """(algorithm, hex digest) of ``path`` comparable with ``remote``: sha256 for LFS, git blob sha1 otherwise."""
    if remote.sha256:
        h = hashlib.sha256()
        algo = "sha256"
    else:
        h = hashlib.sha1()  # git's object id, not used for security alone: the size is checked too
        h.update(f"blob {path.stat().st_size}\0".encode())
        algo = "git-sha1"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return algo, h.hexdigest()


def unverifiable(remote: RemoteFile) -> HubError:
    """The hub publishes no hash for ``remote``: nothing can show its bytes are the repository's."""
    return HubError("unverifiable", f"{remote.name}: the hub at {endpoint()} publishes no hash for this file, so "
                                    "Duet cannot check that the bytes are the repository's, and does not import "
                                    "it. Nobody altered anything: this endpoint (a mirror?) leaves the hashes out. "
                                    "Use an endpoint that publishes them (huggingface.co does; unset HF_ENDPOINT), "
                                    "then run the same command again: the listing is fetched afresh and what was "
                                    "downloaded is checked, not fetched again.")


def verify(path: Path, remote: RemoteFile, progress: Callable[[int], None] | None = None) -> None:
    """Raise :class:`HubError` unless ``path`` is exactly ``remote``; the message says which cause.

    Bytes that differ (size or hash) are deleted (kind ``integrity``): the next run fetches them again.
    A file the hub gives no hash for is kept (kind ``unverifiable``): the next run, with a listing that
    has the hash, checks it without downloading it again.
    """
    expected = remote.sha256 or remote.blob_id
    size = path.stat().st_size
    if expected is None:
        raise unverifiable(remote)
    if size != remote.size:
        path.unlink(missing_ok=True)
        raise HubError("integrity", f"{remote.name}: {size} bytes arrived where the hub lists {remote.size}; the "
                                    "copy was deleted and nothing was imported. The connection was cut or a proxy "
                                    "altered the file: run the same command again to fetch it again.")
    algo, got = file_digest(path, remote, progress)
    if got != expected:
        path.unlink(missing_ok=True)
        raise HubError("integrity", f"{remote.name}: its {algo} is {got[:16]}…, the hub lists {expected[:16]}…: "
                                    "the bytes are not the repository's. The copy was deleted and nothing was "
                                    f"imported. Something between you and the hub ({endpoint()}: a proxy, a "
                                    "mirror) changed them. Run the same command again to fetch it again; if it "
                                    "fails the same way, use another network or HF_ENDPOINT.")


def _part_path(local_dir: Path, name: str) -> Path:
    return local_dir / ".partial" / f"{checked_name(name)}.part"


def download(repo: str, commit: str, remote: RemoteFile, local_dir: Path,
             on_bytes: Callable[[int], None] | None = None) -> Path:
    """Fetch one file into ``local_dir``, continuing a partial one, verify it, and move it into place.

    huggingface_hub's own ``hf_hub_download`` resumes only within one process (it downloads to a
    process-unique temporary file), so a pull killed by SIGKILL or a closed laptop would start each
    file again. Here the bytes go to ``.partial/<name>.part`` and the next run continues it with a
    Range request through huggingface_hub's ``http_get``; the hub's metadata lookup, headers (token,
    user agent) and redirects are huggingface_hub's.
    """
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url, http_get
    from huggingface_hub.utils import build_hf_headers
    from tqdm.auto import tqdm

    class _Bytes(tqdm):  # huggingface_hub reports progress through a tqdm class; we only want the counts
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if n:  # called before each piece is written: one past the listed size is never written
                if sink and sink[0].tell() + int(n) > remote.size:
                    raise HubError("integrity", f"{remote.name}: the server sent more than the {remote.size} bytes "
                                                "the hub lists; the copy was deleted and nothing was imported. "
                                                "Run the same command again; if it happens again, the server "
                                                f"({endpoint()}) is not serving this repository's files.")
                if on_bytes is not None:
                    on_bytes(int(n))
            return None

    final = local_dir / checked_name(remote.name, repo)  # before any file operation
    if final.is_file():  # complete from an earlier run (or re-checked after a failed verification)
        try:
            verify(final, remote)
            return final
        except HubError as e:
            if e.kind != "integrity":
                raise  # bytes that differ were deleted by verify: fetched again below
    if remote.sha256 is None and remote.blob_id is None:
        raise unverifiable(remote)  # before fetching what could not be checked
    if offline():
        raise explain(OSError("offline"), repo)
    # huggingface_hub reads the body in 10 MB pieces and writes each whole: in CHUNK pieces the progress
    # comes within seconds even at 40 KB/s, and an interrupted download keeps all but the last piece.
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK)
    part = _part_path(local_dir, remote.name)
    part.parent.mkdir(parents=True, exist_ok=True)
    sink: list = []  # the open part file: where the next piece would go (its position, after any restart)
    url = hf_hub_url(repo, remote.name, revision=commit, endpoint=endpoint())
    try:
        meta = get_hf_file_metadata(url, timeout=_timeout(), endpoint=endpoint())
        headers = build_hf_headers()
        location = meta.location or url
        if urlparse(location).netloc != urlparse(url).netloc:
            headers.pop("authorization", None)  # a signed CDN address: never send the token elsewhere
        have = part.stat().st_size if part.exists() else 0
        if have > remote.size:
            part.unlink()
            have = 0
        with open(part, "ab") as fh:
            sink.append(fh)
            http_get(location, fh, resume_size=have, headers=headers, expected_size=remote.size,
                     displayed_filename=remote.name, tqdm_class=_Bytes)
    except HubError as e:
        if e.kind == "integrity":
            part.unlink(missing_ok=True)
        raise
    except OSError as e:
        on_disk = part.stat().st_size if part.exists() else 0
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(remote, on_disk, local_dir) from None
        if e.errno is None and on_disk < remote.size:  # huggingface_hub's "Consistency check failed"
            raise HubError("connection", f"{repo}: the server ended {remote.name} after {on_disk:,} of its "
                                         f"{remote.size:,} bytes (the connection was cut). Run the same command "
                                         "again: the download resumes where it stopped.") from None
        raise explain(e, repo) from e
    except (HfHubHTTPError, httpx2.HTTPError, ValueError) as e:  # not a pause raised by on_bytes
        raise explain(e, repo) from e
    verify(part, remote)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    return final


def disk_full(remote: RemoteFile, on_disk: int, local_dir: Path) -> HubError:
    """A full disk mid-download, in words: how much this file still needs, how much is free, and where."""
    import shutil

    from app.core.sizes import human_bytes

    try:
        free = shutil.disk_usage(local_dir).free
    except OSError:
        free = 0
    return HubError("disk", f"the disk is full: {remote.name} needs {human_bytes(remote.size - on_disk)} more "
                            f"({human_bytes(on_disk)} of {human_bytes(remote.size)} are downloaded, and kept) and "
                            f"{local_dir} has {human_bytes(free)} free. Free some space there (or point "
                            "DUET_DATA_DIR at a larger disk), then run the same command again: it resumes.")


def partial_bytes(local_dir: Path, name: str) -> int:
    """Bytes of ``name`` already on disk from an interrupted download."""
    part = _part_path(local_dir, name)
    return part.stat().st_size if part.exists() else 0
