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
  connection and offline mode each become a :class:`HubError` whose message says what to do.

Resuming across processes is done here (see :func:`download`): huggingface_hub ≥ 2 resumes only
inside the process that started a download.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from app.core.errors import ResourceError
from app.core.paths import UnsafeName, plain_relative_name

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 20.0  # seconds without a byte from the server before giving up (not the whole download)


class HubError(ResourceError):
    """A download problem with a cause (``kind``) and a message that says what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # offline | unauthorized | forbidden | not_found | rate_limited | server | timeout
        # | connection | integrity | bad_repo


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
    return HubError("connection", f"{repo}: download failed: {e}")


def list_repo(repo: str, revision: str = "main") -> RepoListing:
    """The repository's files at ``revision`` with their sizes and hashes, and the commit it resolves to."""
    from huggingface_hub import HfApi

    if offline():
        raise explain(OSError("offline"), repo)
    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True,
                                                     timeout=_timeout())
    except Exception as e:  # every failure becomes a HubError with its cause
        raise explain(e, repo) from e
    if not info.sha:
        raise HubError("bad_repo", f"{repo}: the hub's answer has no commit id; is HF_ENDPOINT a Hub mirror?")
    files = []
    for s in info.siblings or []:
        files.append(RemoteFile(checked_name(s.rfilename, repo), int(s.lfs.size if s.lfs else (s.size or 0)),
                                s.lfs.sha256 if s.lfs else None, s.blob_id))
    return RepoListing(repo, info.sha, tuple(files))


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


def verify(path: Path, remote: RemoteFile, progress: Callable[[int], None] | None = None) -> None:
    """Raise :class:`HubError` (kind ``integrity``) and delete ``path`` unless it is exactly ``remote``."""
    expected = remote.sha256 or remote.blob_id
    size = path.stat().st_size
    problem = None
    if size != remote.size:
        problem = f"{size} bytes, the hub lists {remote.size}"
    elif expected is None:
        problem = "the hub lists no hash for it, so it cannot be verified"
    else:
        algo, got = file_digest(path, remote, progress)
        if got != expected:
            problem = f"{algo} {got[:16]}…, the hub lists {expected[:16]}…"
    if problem:
        path.unlink(missing_ok=True)
        raise HubError("integrity", f"{remote.name}: the downloaded file does not match the hub ({problem}). "
                                    f"It was deleted and nothing was imported. The server or a proxy/mirror "
                                    f"({endpoint()}) altered it: run the command again, or use another HF_ENDPOINT.")


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
            if on_bytes is not None and n:
                on_bytes(int(n))
            return None

    final = local_dir / checked_name(remote.name, repo)  # before any file operation
    if final.is_file():  # complete from an earlier run that stopped before recording it
        verify(final, remote)
        return final
    if offline():
        raise explain(OSError("offline"), repo)
    # huggingface_hub reads the body in 10 MB pieces and writes each whole: at 1 MB the progress bar
    # moves smoothly and an interrupted download keeps all but the last MB.
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK)
    part = _part_path(local_dir, remote.name)
    part.parent.mkdir(parents=True, exist_ok=True)
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
            http_get(location, fh, resume_size=have, headers=headers, expected_size=remote.size,
                     displayed_filename=remote.name, tqdm_class=_Bytes)
    except HubError:
        raise
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as e:  # not a pause raised by on_bytes
        raise explain(e, repo) from e
    verify(part, remote)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    return final


def partial_bytes(local_dir: Path, name: str) -> int:
    """Bytes of ``name`` already on disk from an interrupted download."""
    part = _part_path(local_dir, name)
    return part.stat().st_size if part.exists() else 0
