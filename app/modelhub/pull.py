"""``duet models pull``: hub repository → verified download → GGUF → quantized → library entry.

One job, in stages, each recorded in a small JSON state file (written atomically) in a work folder
under the library (``<library>/.pulls/<owner>--<name>@<revision>/``), so a pull killed at any
point — network drop, SIGKILL, laptop closed — continues on the next run and never redoes a
finished stage:

``resolve``  the repository listing at a fixed commit (sizes, sha256), once; ``check`` disk and RAM;
``download`` each file resumed by huggingface_hub and verified (:mod:`app.modelhub.hub`);
``convert`` Qwen2.5-VL safetensors → F16 GGUF + mmproj; ``quantize`` with llama.cpp;
``import`` the pair moved into ``<library>/<name>/`` and only then recorded in ``library.json``.

Three kinds of repository are accepted: a Qwen2.5-VL checkpoint (MMDuet2 is one), and a repository
that already holds a GGUF + mmproj pair (only the pair is downloaded; no conversion).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path

from app.core.atomic import write_json_atomic
from app.core.bounded import read_regular_text
from app.core.errors import DuetError, ResourceError
from app.core.locks import exclusive
from app.core.sizes import human_bytes
from app.modelhub import hardware, hub
from app.modelhub.hub import HubError, RemoteFile
from app.modelhub.library import ModelEntry, ModelLibrary, check_name
from app.modelhub.pull_files import STATE_MAX_BYTES, Rate, gguf_pair, pending_pulls, remove_partials
from app.modelhub.validate import ModelFileError, check_pair
from app.modelhub.vision_pad import pad_vision_mlp, padded_width

QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
# Output size of each quantization relative to the F16 GGUF (llama.cpp bits per weight / 16, rounded up:
# the token embedding and output stay at higher precision in the K-quant mixes).
QUANT_RATIO = {"Q4_K_M": 0.36, "Q5_K_M": 0.42, "Q8_0": 0.56, "F16": 1.0}
# What a checkpoint needs for conversion; PyTorch .bin/.pt weights are never downloaded (no pickle loading).
HF_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer.model")
MARGIN = 256 * 2**20
STATE_VERSION = 1


class PullError(ResourceError):
    """The pull cannot go on; the message says why and what to do. ``kind`` as in :class:`HubError`."""

    def __init__(self, message: str, kind: str = "pull") -> None:
        super().__init__(message)
        self.kind = kind


class PullStopped(DuetError):
    """The user paused or cancelled; everything done so far is kept for the next run (unless cancelled)."""


@dataclass
class PullEvent:
    """One progress report: ``done``/``total`` are bytes while downloading and verifying, else 0/0."""

    stage: str  # resolve | check | download | verify | convert | quantize | import | done
    message: str
    done: int = 0
    total: int = 0
    rate: float = 0.0  # bytes per second over the last few seconds
    eta: float | None = None  # seconds

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PullPlan:
    kind: str  # "hf" (convert + quantize) | "gguf" (a ready pair)
    files: tuple[RemoteFile, ...]
    download_bytes: int  # still to fetch
    disk_needed: int
    disk_free: int
    ram_needed: int  # 0 when no conversion is left
    ram_available: int


def work_key(repo: str, revision: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "_", f"{repo.replace('/', '--')}@{revision}")


def default_name(repo: str, quant: str) -> str:
    return f"{repo.split('/')[-1].lower()}-{quant.lower()}"


class PullJob:
    """A resumable pull. ``run()`` returns the library entry; ``stop`` (an Event) pauses it between chunks."""

    def __init__(self, repo: str, *, revision: str = "main", quant: str = "Q4_K_M", name: str | None = None,
                 keep_intermediate: bool = False, library: ModelLibrary | None = None,
                 progress: Callable[[PullEvent], None] | None = None, stop: threading.Event | None = None,
                 threads: int = 0, projector: str = "auto") -> None:
        quant = quant.upper()
        if projector not in ("auto", "f16", "bf16"):
            raise PullError(f"--projector {projector}: choose auto, f16 or bf16", "usage")
        if quant not in QUANTS:
            raise PullError(f"--quant {quant}: choose one of {', '.join(QUANTS)}", "usage")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise PullError(f"{repo!r}: a repository is owner/name, e.g. wangyueqian/MMDuet2", "usage")
        self.repo, self.revision, self.quant = repo, revision, quant
        # The name becomes <library>/<name>/<name>.gguf: checked here, before any file is fetched or moved
        # (checked only when the library recorded it, `--name /elsewhere/x` wrote /elsewhere/x.gguf).
        try:
            self.name = check_name(name or default_name(repo, quant))
        except ModelFileError as e:
            flag = "--name " if name else f"the default name for {repo} "
            raise PullError(f"{flag}{e}", "usage") from None
        self.keep = keep_intermediate
        self.library = library or ModelLibrary()
        self.progress = progress or (lambda ev: None)
        self.stop = stop or threading.Event()
        self.threads = threads
        self.projector = projector  # the mmproj's type when converting; auto: hardware.projector_type
        self.work = self.library.root / ".pulls" / work_key(repo, revision)
        self.state_path = self.work / "state.json"
        self.hf_dir = self.work / "hf"
        self.state: dict = {}

    # ---- state ------------------------------------------------------------------------------
    def _load_state(self) -> None:
        self.state = {}
        if self.state_path.exists():
            try:
                self.state = json.loads(read_regular_text(self.state_path, STATE_MAX_BYTES))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                self.state = {}  # a damaged state only costs re-verification, never a wrong import
        if not isinstance(self.state, dict):
            self.state = {}
        if self.state.get("version") != STATE_VERSION or self.state.get("repo") != self.repo:
            self.state = {"version": STATE_VERSION, "repo": self.repo, "revision": self.revision}
        self.state.setdefault("verified", [])
        self.state.setdefault("quantized", {})

    def _save(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def _emit(self, stage: str, message: str, **kw: object) -> None:
        self.progress(PullEvent(stage, message, **kw))  # type: ignore[arg-type]

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise PullStopped(f"paused; run the same pull again to continue ({self.work})")

    # ---- stages -----------------------------------------------------------------------------
    def resolve(self) -> None:
        """Fix the commit and the file listing once; later runs (even offline) reuse them.

        Except after a failed verification (``recheck`` in the state): the listing kept then may be
        what was wrong (a mirror that published no hashes), so the next run asks the hub again — at
        the same commit — and checks every file already on disk against it from scratch; only the
        files that fail are fetched again. Keeping the old listing made such a pull fail for ever.
        """
        recheck = bool(self.state.get("recheck"))
        if self.state.get("commit") and self.state.get("listing") and not recheck:
            return
        revision = self.state["commit"] if recheck and self.state.get("commit") else self.revision
        verb = "Checking again" if recheck else "Looking up"
        self._emit("resolve", f"{verb} {self.repo}@{revision} at {hub.endpoint()}")
        listing = hub.list_repo(self.repo, revision)
        if recheck:
            self.state["verified"] = []  # verified again below, against the fresh listing
            self.state.pop("recheck", None)
        self.state.update(commit=listing.commit, listing=[f.to_json() for f in listing.files])
        self.work.mkdir(parents=True, exist_ok=True)
        self._save()

    def plan(self) -> PullPlan:
        files = tuple(RemoteFile.from_json(d) for d in self.state["listing"])
        names = {f.name for f in files}
        has_checkpoint = "config.json" in names and any(n.endswith(".safetensors") for n in names)
        try:
            pair = gguf_pair(files, self.quant)
        except PullError:
            if not has_checkpoint:
                raise
            pair = None  # GGUFs, but not of this quantization: convert the checkpoint beside them instead
        if pair is not None:
            kind, chosen = "gguf", pair
        else:
            if not has_checkpoint:
                raise PullError(f"{self.repo}: neither a GGUF + mmproj pair nor a safetensors checkpoint "
                                f"(files: {', '.join(sorted(names)[:8])}); Duet pulls MMDuet2 / Qwen2.5-VL "
                                "checkpoints and repositories of ready GGUF pairs", "bad_repo")
            kind = "hf"
            chosen = tuple(f for f in files if "/" not in f.name and any(fnmatch(f.name, p) for p in HF_PATTERNS))
        verified = set(self.state["verified"])
        todo = [f for f in chosen if f.name not in verified]
        partial = sum(hub.partial_bytes(self.hf_dir, f.name) for f in todo) if todo else 0
        download = max(0, sum(f.size for f in todo) - partial)
        weights = sum(f.size for f in chosen if f.name.endswith(".safetensors"))
        need = download
        ram_needed = 0
        if kind == "hf":
            if not self.state.get("converted"):
                need += weights  # the F16 GGUF pair is about the size of a 16-bit checkpoint
                ram_needed = int(weights * 0.9) + 512 * 2**20  # the GGUF writer holds the text model's tensors
            if self.quant != "F16" and self.quant not in self.state["quantized"]:
                need += int(weights * QUANT_RATIO[self.quant])
        need += MARGIN
        _, avail_ram = hardware.ram()
        return PullPlan(kind, tuple(chosen), download, need, hardware.free_disk(self.library.root), ram_needed,
                        avail_ram)

    def check(self, plan: PullPlan) -> None:
        g = 1e9
        if plan.disk_free < plan.disk_needed:
            raise PullError(
                f"not enough disk space: this pull needs {plan.disk_needed / g:.2f} GB more "
                f"({plan.download_bytes / g:.2f} GB to download, plus conversion and quantization) but "
                f"{self.library.root} has {plan.disk_free / g:.2f} GB free. Free "
                f"{(plan.disk_needed - plan.disk_free) / g:.2f} GB, or point DUET_DATA_DIR at a larger disk.",
                "disk")
        if plan.ram_needed and plan.ram_available and plan.ram_available < plan.ram_needed:
            raise PullError(
                f"not enough memory to convert: converting needs about {plan.ram_needed / g:.1f} GB of RAM and "
                f"{plan.ram_available / g:.1f} GB is available. Close other programs, or pull a repository "
                "that already holds a GGUF + mmproj pair (no conversion).", "ram")

    def download(self, plan: PullPlan) -> None:
        verified = set(self.state["verified"])
        todo = [f for f in plan.files if f.name not in verified]
        total = sum(f.size for f in plan.files)
        done = sum(f.size for f in plan.files if f.name in verified) + \
            sum(hub.partial_bytes(self.hf_dir, f.name) for f in todo)
        rate = Rate(start=done)
        last = [0.0]
        counter = [done]

        def on_bytes(n: int) -> None:
            counter[0] += n
            now = time.monotonic()
            if now - last[0] >= 0.25 or counter[0] >= total:
                last[0] = now
                r = rate.add(counter[0])
                eta = (total - counter[0]) / r if r > 0 else None
                self._emit("download", f"Downloading {self.repo}", done=counter[0], total=total, rate=r, eta=eta)
            self._check_stop()

        for f in todo:
            self._check_stop()
            before = counter[0] - hub.partial_bytes(self.hf_dir, f.name)  # `done` counted the partial file
            try:
                hub.download(self.repo, self.state["commit"], f, self.hf_dir, on_bytes)
            except HubError as e:
                if e.kind in ("integrity", "unverifiable"):  # the next run re-lists and re-verifies
                    self.state["recheck"] = True
                    self._save()
                raise
            counter[0] = before + f.size
            self.state["verified"] = sorted({*self.state["verified"], f.name})
            self._save()
            self._emit("verify", f"{f.name}: sha256 verified" if f.sha256 else f"{f.name}: git hash verified",
                       done=counter[0], total=total)
        self._emit("download", f"Downloaded and verified {len(plan.files)} file(s)", done=total, total=total)

    def convert(self) -> tuple[Path, Path]:
        from app.modelhub.convert import convert

        proj = self.projector
        if proj == "auto":
            proj = hardware.projector_type(hardware.detect())
        c = self.state.get("converted")
        # A resumed pull reuses its conversion unless the projector type asked for has changed.
        if c and c.get("projector", "f16") == proj and Path(c["model"]).exists() and Path(c["mmproj"]).exists():
            return Path(c["model"]), Path(c["mmproj"])
        out = self.work / "gguf"
        remove_partials(out)
        base = self.repo.split("/")[-1].lower()
        why = " (this CPU multiplies BF16 natively)" if proj == "bf16" and self.projector == "auto" else ""
        self._emit("convert", f"Converting the checkpoint to GGUF (F16 text model, {proj.upper()} projector{why})")
        t0 = time.monotonic()
        r = convert(self.hf_dir, out, outtype="f16", name=base, overwrite=True, mmproj_outtype=proj)
        self.state["converted"] = {"model": str(r.model), "mmproj": str(r.mmproj), "projector": proj}
        self._save()
        self._emit("convert", f"Converted in {time.monotonic() - t0:.1f} s: model {human_bytes(r.model.stat().st_size)} + "
                              f"mmproj {human_bytes(r.mmproj.stat().st_size)}")
        return r.model, r.mmproj

    def quantize(self, f16: Path) -> Path:
        from app.modelhub.quantize import quantize

        q = self.state["quantized"].get(self.quant)
        if q and Path(q).exists():
            return Path(q)
        out = self.work / "quant"
        out.mkdir(parents=True, exist_ok=True)
        remove_partials(out)
        self._emit("quantize", f"Quantizing to {self.quant} with llama.cpp")
        t0 = time.monotonic()
        r = quantize(f16, self.quant, out / f"{self.name}.gguf", overwrite=True, threads=self.threads)
        self.state["quantized"][self.quant] = str(r.path)
        self._save()
        self._emit("quantize", f"Quantized in {time.monotonic() - t0:.1f} s: {human_bytes(r.size_in)} → "
                               f"{human_bytes(r.size_out)}")
        return r.path

    def import_pair(self, model: Path, mmproj: Path) -> ModelEntry:
        """Move the pair into ``<library>/<name>/`` and only then record it: never half an entry."""
        dest = self.library.root / self.name
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        targets: list[Path] = []
        moved: list[tuple[Path, Path]] = []  # (where from, where to): put back if the library refuses the pair
        for src, final in ((model, dest / f"{self.name}.gguf"), (mmproj, dest / f"mmproj-{self.name}.gguf")):
            if src.exists():
                if src == mmproj and padded_width(src):  # a ready projector from another converter
                    self._emit("import", "Padding the vision projector's MLP for ggml's fast matrix kernels "
                                         "(same outputs; about 1.4× faster vision encoding on a CPU)")
                    pad_vision_mlp(src, final)
                    if not self.keep:
                        src.unlink()
                elif self.keep:
                    tmp = final.with_name(f".{final.name}.partial")
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, final)
                else:
                    os.replace(src, final)
                    moved.append((src, final))
            elif not final.exists():
                raise PullError(f"{src}: missing; delete {self.work} and pull again")
            targets.append(final)
        self._emit("import", f"Adding {self.name} to the library")
        try:
            return self.library.add(self.name, targets[0], targets[1], source="downloaded", copy=False,
                                    replace=True, notes=f"{self.repo}@{self.state['commit'][:12]} {self.quant}")
        except BaseException:  # nothing left in the library's folder that the library does not list
            for src, final in moved:
                os.replace(final, src)
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            raise

    def check_ready_pair(self, model: Path, mmproj: Path) -> None:
        """A ready pair from the hub must be a usable GGUF pair before it goes anywhere near the library.

        Its bytes matched the hub's hashes, so fetching it again gives the same files: they are deleted
        (with the rest of this pull's work folder) and the pull ends, rather than leaving tens of MB
        behind that every later pull of this repository would take as verified and fail on again.
        """
        try:
            check_pair(model, mmproj)
        except ModelFileError as e:
            shutil.rmtree(self.work, ignore_errors=True)
            raise PullError(f"{self.repo}: its files match the hub's hashes but are not a usable GGUF pair ({e}). "
                            "They were deleted and nothing was imported; the repository itself holds them, so "
                            "pulling it again would give the same files: choose another repository or --quant.",
                            "bad_repo") from None

    # ---- the whole job ------------------------------------------------------------------------
    def run(self) -> ModelEntry:
        """The whole pull, holding a lock on its work folder: two pulls of one repository never interleave."""
        self.work.mkdir(parents=True, exist_ok=True)
        def busy() -> PullError:
            return PullError(f"{self.repo} is already being pulled (from the app or another terminal); "
                             "wait for it, or pause it there", "busy")

        with exclusive(self._lock_path(), busy):
            try:
                return self._run()
            finally:
                if not self.work.exists():  # finished (or cancelled): leave no trace in .pulls
                    self._lock_path().unlink(missing_ok=True)

    def _lock_path(self) -> Path:
        return self.work.parent / f"{self.work.name}.lock"

    def _run(self) -> ModelEntry:
        self._load_state()
        self.state["request"] = {"quant": self.quant, "name": self.name}
        existing = self.library.get(self.name)
        if existing is not None and existing.notes.startswith(f"{self.repo}@") and existing.model.exists():
            self._emit("done", f"{self.name} is already in the library (from {existing.notes})")
            if not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)
            return existing
        if existing is not None:
            raise PullError(f"a model named {self.name!r} is already in the library; choose another --name "
                            f"or remove it first (`duet models remove {self.name}`)", "usage")
        self.resolve()
        plan = self.plan()
        self.check(plan)
        ram = f"; RAM: {human_bytes(plan.ram_needed)} needed, {human_bytes(plan.ram_available)} available" if plan.ram_needed else ""
        self._emit("check", f"Disk: {human_bytes(plan.disk_needed)} needed, {human_bytes(plan.disk_free)} free{ram}")
        self.download(plan)
        self._check_stop()
        if plan.kind == "gguf":
            model, mmproj = (self.hf_dir / plan.files[0].name, self.hf_dir / plan.files[1].name)
            self.check_ready_pair(model, mmproj)
        else:
            f16, mmproj = self.convert()
            self._check_stop()
            model = f16 if self.quant == "F16" else self.quantize(f16)
        self._check_stop()
        entry = self.import_pair(model, mmproj)
        self.state["imported"] = self.name
        self._save()
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        self._emit("done", f"{self.name} is ready: duet run --model {self.name} --source …")
        return entry

    def cancel_cleanup(self) -> None:
        """Forget a pull: its work folder (downloads, intermediates) goes; the library is untouched."""
        shutil.rmtree(self.work, ignore_errors=True)
        self._lock_path().unlink(missing_ok=True)


__all__ = ["HubError", "PullError", "PullEvent", "PullJob", "PullPlan", "PullStopped", "QUANTS", "pending_pulls"]
