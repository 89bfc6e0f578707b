"""``duet models pull`` against a loopback stand-in hub: real huggingface_hub, real HTTP, ``HF_ENDPOINT``.

The repository served is the tiny Qwen2.5-VL checkpoint (``tiny_model.hf_dir``), so every pull goes
through the real converter, llama.cpp's quantizer and the library, and the result runs in ``duet run``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.modelhub import hardware
from app.modelhub.hub import HubError
from app.modelhub.library import ModelLibrary
from app.modelhub.pull import PullError, PullJob, PullStopped
from tests.modelhub.hub_server import StandInHub, hub_for_duet, partial_bytes, repo_from_folder

REPO = Path(__file__).resolve().parents[2]
NAME = "duet/tiny-vl"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(tiny_model, monkeypatch):
    """The stand-in hub serving the tiny checkpoint; HF_ENDPOINT points at it and offline mode is off."""
    repos = {NAME: repo_from_folder(tiny_model.hf_dir),
             "duet/tiny-gguf": {"tiny-f32.gguf": tiny_model.model.read_bytes(),
                                "mmproj-tiny-f32.gguf": tiny_model.mmproj.read_bytes(),
                                "README.md": b"# a ready GGUF pair\n"}}
    with hub_for_duet(repos, monkeypatch, timeout=2) as h:
        yield h


@pytest.fixture
def lib(tmp_path, monkeypatch) -> ModelLibrary:
    monkeypatch.setenv("DUET_DATA_DIR", str(tmp_path / "data"))
    return ModelLibrary(tmp_path / "data" / "models")


def _env(hub: StandInHub, lib: ModelLibrary, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=hub.url, DUET_DATA_DIR=str(lib.root.parent), PYTHONPATH=str(REPO),
               DUET_HUB_TIMEOUT="5", **extra)
    return env


def test_full_pull_then_duet_run(hub, lib, vtest_avi, capsys):
    """CLI pull: downloaded, every file verified, converted, quantized, in the library; then it runs."""
    from app.cli import main

    events: list[dict] = []
    assert main(["models", "pull", NAME, "--quant", "Q8_0", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in out if line.startswith("{")]
    stages = [e["stage"] for e in events]
    for stage in ("resolve", "check", "download", "verify", "convert", "quantize", "import", "done"):
        assert stage in stages
    assert stages.index("download") < stages.index("convert") < stages.index("quantize") < stages.index("import")
    dl = [e for e in events if e["stage"] == "download" and e["total"]]
    assert dl[-1]["done"] == dl[-1]["total"] == sum(len(b) for n, b in hub.repos[NAME].items()
                                                    if not n.startswith("."))
    verified = {e["message"].split(":")[0] for e in events if e["stage"] == "verify"}
    assert "model.safetensors" in verified and "config.json" in verified

    entry = lib.get("tiny-vl-q8_0")
    assert entry is not None and entry.source == "downloaded" and "Q8_0" in entry.notes
    assert entry.model.parent == lib.root / "tiny-vl-q8_0"
    import gguf

    types = {t.tensor_type.name for t in gguf.GGUFReader(str(entry.model)).tensors}
    assert "Q8_0" in types  # really quantized by llama.cpp
    assert not (lib.root / ".pulls").exists() or not any((lib.root / ".pulls").iterdir())  # intermediates gone

    capsys.readouterr()
    rc = main(["run", "--source", str(vtest_avi), "--model", "tiny-vl-q8_0", "--fast", "--max-turns", "2",
               "--n-ctx", "2048", "--interval", "2", "--verbose"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "2 turns" in err


@pytest.mark.parametrize("projector", ["bf16", "f16"])
def test_projector_type_is_chosen_at_conversion(hub, lib, projector):
    """BF16 projector (for CPUs with native BF16 products) or F16; the text model is quantized either way."""
    import gguf

    events = []
    entry = PullJob(NAME, quant="Q8_0", library=lib, projector=projector, progress=events.append).run()
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(entry.mmproj)).tensors if t.name.endswith("ffn_up.weight")}
    assert types == {projector.upper()}
    assert any(f"{projector.upper()} projector" in e.message for e in events if e.stage == "convert")
    with pytest.raises(PullError, match="--projector"):
        PullJob(NAME, library=lib, projector="q4")


def test_gguf_pair_repo_is_pulled_without_conversion(hub, lib):
    events = []
    entry = PullJob("duet/tiny-gguf", quant="F16", library=lib, progress=events.append).run()
    assert sha(entry.model) == hashlib.sha256(hub.repos["duet/tiny-gguf"]["tiny-f32.gguf"]).hexdigest()
    assert sha(entry.mmproj) == hashlib.sha256(hub.repos["duet/tiny-gguf"]["mmproj-tiny-f32.gguf"]).hexdigest()
    assert not {"convert", "quantize"} & {e.stage for e in events}
    assert not any("README" in r for r in hub.faults.requests)  # only the pair is downloaded


def test_a_ready_projector_with_an_unpadded_vision_mlp_is_padded_on_import(hub, lib, tmp_path):
    """A pair made by another converter (vision MLP 120 wide) is pulled as is, then its projector is padded."""
    import gguf

    from app.modelhub import vision_pad
    from app.modelhub.tiny import TinySpec, build_tiny

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision_pad, "VISION_FFN_MULTIPLE", 1)
        other = build_tiny(TinySpec(vision_ffn=120), tmp_path / "other")
    hub.repos["duet/other-gguf"] = {"m-f32.gguf": other.model.read_bytes(), "mmproj-m-f32.gguf": other.mmproj.read_bytes()}
    events = []
    entry = PullJob("duet/other-gguf", quant="F16", library=lib, progress=events.append).run()
    assert sha(entry.model) == sha(other.model)
    assert any("Padding the vision projector" in e.message for e in events)
    widths = {int(t.shape[0]) for t in gguf.GGUFReader(str(entry.mmproj)).tensors if t.name.endswith("ffn_down.weight")}
    assert widths == {128}
    assert vision_pad.padded_width(entry.mmproj) is None


def test_corrupting_mirror_is_refused_and_nothing_imported(hub, lib):
    hub.faults.corrupt = {"model.safetensors"}
    with pytest.raises(HubError) as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    assert e.value.kind == "integrity"
    assert "model.safetensors" in str(e.value) and "deleted" in str(e.value)
    assert lib.user_entries() == []
    assert not (lib.root / "tiny-vl-q8_0").exists()
    work = lib.root / ".pulls"
    assert not list(work.rglob("model.safetensors"))  # the bad file is gone
    # The mirror is fixed: the same command completes, reusing the files already verified.
    hub.faults.corrupt = set()
    hub.faults.requests.clear()
    entry = PullJob(NAME, quant="Q8_0", library=lib).run()
    assert entry.name == "tiny-vl-q8_0"
    fetched = [r for r in hub.faults.requests if r.startswith("GET") and "/resolve/" in r]
    assert any("model.safetensors" in r for r in fetched)
    assert not any(r.endswith("/config.json") for r in fetched)  # verified before: not fetched again


def test_sigkilled_pull_resumes_with_identical_files(hub, lib, tiny_model):
    """A pull killed mid-file continues with an HTTP Range request and ends with the same bytes."""
    hub.faults.rate = 300_000  # ≈ 7 s for the 2 MB safetensors
    cmd = [sys.executable, "-m", "app.cli", "models", "pull", NAME, "--quant", "Q8_0", "--json",
           "--keep-intermediate"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(hub, lib), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    killed_at = None
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            ev = json.loads(line)
            if ev["stage"] == "download" and ev["total"] and 500_000 < ev["done"] < ev["total"] - 500_000:
                # huggingface_hub reports a chunk just before writing it: wait until it is on disk.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and partial_bytes(lib.root) < 1 << 20:
                    time.sleep(0.05)
                killed_at = ev["done"]
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    assert lib.user_entries() == []  # nothing half-written in the library
    assert not (lib.root / "tiny-vl-q8_0").exists()

    hub.faults.rate = 0
    hub.faults.requests.clear()
    r = subprocess.run(cmd, cwd=REPO, env=_env(hub, lib), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = [q for q in hub.faults.requests if "model.safetensors" in q and q.startswith("GET")]
    assert resumed and "Range: bytes=" in resumed[0] and not resumed[0].endswith("bytes=0-")
    start = int(resumed[0].rsplit("bytes=", 1)[1].rstrip("-"))
    assert start > 0  # continued, not restarted
    entry = lib.get("tiny-vl-q8_0")
    assert entry is not None
    hf = next((lib.root / ".pulls").glob("*/hf"))
    for name, data in hub.repos[NAME].items():
        assert (hf / name).read_bytes() == data, name

    # Identical to a pull that was never interrupted.
    other = ModelLibrary(lib.root.parent / "other")
    ref = PullJob(NAME, quant="Q8_0", library=other).run()
    assert sha(ref.model) == sha(entry.model) and sha(ref.mmproj) == sha(entry.mmproj)


def test_finished_stages_are_not_redone(hub, lib):
    stop = threading.Event()
    seen: list[str] = []

    def progress(ev):
        seen.append(ev.stage)
        if ev.stage == "convert" and ev.message.startswith("Converted"):
            stop.set()  # as if the user pressed pause right after conversion

    with pytest.raises(PullStopped):
        PullJob(NAME, quant="Q4_K_M", library=lib, progress=progress, stop=stop).run()
    assert lib.user_entries() == []
    state = json.loads(next((lib.root / ".pulls").glob("*/state.json")).read_text())
    assert state["converted"] and len(state["verified"]) == len(hub.repos[NAME])
    hub.faults.requests.clear()
    hub.faults.status = 500  # the hub is down now: nothing left needs it
    seen.clear()
    entry = PullJob(NAME, quant="Q4_K_M", library=lib, progress=progress, stop=threading.Event()).run()
    assert "convert" not in seen and "quantize" in seen
    assert hub.faults.requests == []
    assert entry.name == "tiny-vl-q4_k_m"


@pytest.mark.parametrize("status,kind,words", [
    (401, "unauthorized", "HF_TOKEN"),
    (429, "rate_limited", "429"),
    (500, "server", "500"),
    (503, "server", "try again later"),
])
def test_http_errors_have_distinct_messages(hub, lib, status, kind, words):
    hub.faults.status = status
    with pytest.raises(HubError) as e:
        PullJob(NAME, library=lib, quant="Q8_0").run()
    assert e.value.kind == kind and words in str(e.value)
    assert lib.user_entries() == []


def test_missing_repo_and_revision(hub, lib):
    with pytest.raises(HubError) as e:
        PullJob("duet/no-such-model", library=lib).run()
    assert e.value.kind == "not_found" and "duet/no-such-model" in str(e.value)
    with pytest.raises(HubError) as e:
        PullJob(NAME, revision="v9", library=lib).run()
    assert e.value.kind == "not_found" and "revision" in str(e.value)


def test_token_is_sent_from_hf_token(hub, lib, monkeypatch):
    hub.faults.token = "hf_secret"
    with pytest.raises(HubError) as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    assert e.value.kind == "unauthorized" and "set HF_TOKEN" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError) as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    assert "refused" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert PullJob(NAME, quant="Q8_0", library=lib).run().name == "tiny-vl-q8_0"


@pytest.mark.timeout(120)
def test_server_that_never_answers_times_out(hub, lib):
    hub.faults.hang = True
    with pytest.raises(HubError) as e:
        PullJob(NAME, library=lib).run()
    assert e.value.kind == "timeout" and "did not answer within 2 s" in str(e.value)


def test_offline_mode_is_clear_and_the_library_still_works(hub, lib, tiny_model):
    lib.add("mine", tiny_model.model, tiny_model.mmproj)
    env = _env(hub, lib, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "app.cli", "models", "pull", NAME], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in r.stderr and "library still work" in r.stderr
    assert hub.faults.requests == []  # nothing left the machine
    r = subprocess.run([sys.executable, "-m", "app.cli", "models", "list"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "mine" in r.stdout


def test_too_little_disk_is_refused_before_downloading(hub, lib, monkeypatch):
    monkeypatch.setattr(hardware, "free_disk", lambda path: 1_000_000)
    with pytest.raises(PullError) as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    msg = str(e.value)
    assert e.value.kind == "disk" and "GB free" in msg and "DUET_DATA_DIR" in msg
    assert not any("/resolve/" in r for r in hub.faults.requests)


def test_too_little_ram_for_conversion(hub, lib, monkeypatch):
    monkeypatch.setattr(hardware, "ram", lambda: (8 * 2**30, 100 * 2**20))
    with pytest.raises(PullError) as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    assert e.value.kind == "ram" and "GB of RAM" in str(e.value)


def test_name_clash_and_bad_arguments(hub, lib, tiny_model):
    lib.add("taken", tiny_model.model, tiny_model.mmproj)
    with pytest.raises(PullError, match="already in the library"):
        PullJob(NAME, name="taken", library=lib).run()
    with pytest.raises(PullError, match="owner/name"):
        PullJob("justaname", library=lib)
    with pytest.raises(PullError, match="Q4_K_M"):
        PullJob(NAME, quant="Q3", library=lib)


def test_one_pull_per_repository_at_a_time(hub, lib):
    from filelock import FileLock

    job = PullJob(NAME, quant="Q8_0", library=lib)
    job.work.mkdir(parents=True, exist_ok=True)
    with FileLock(str(job.work.parent / f"{job.work.name}.lock")):  # as another process's pull holds it
        with pytest.raises(PullError) as e:
            PullJob(NAME, quant="Q8_0", library=lib).run()
    assert e.value.kind == "busy" and "already being pulled" in str(e.value)
    assert job.run().name == "tiny-vl-q8_0"  # free again


def test_pause_mid_file_then_resume(hub, lib):
    """The stop event (the API's pause) stops inside a file; the next run continues that file."""
    hub.faults.rate = 400_000
    stop = threading.Event()
    job = PullJob(NAME, quant="Q8_0", library=lib, stop=stop,
                  progress=lambda ev: stop.set() if ev.stage == "download" and ev.done > 1_500_000 else None)
    with pytest.raises(PullStopped):
        job.run()
    part = next(lib.root.rglob("model.safetensors.part"))
    assert 0 < part.stat().st_size < len(hub.repos[NAME]["model.safetensors"])
    hub.faults.rate = 0
    events = []
    entry = PullJob(NAME, quant="Q8_0", library=lib, progress=events.append).run()
    assert entry.name == "tiny-vl-q8_0"
    downloads = [e for e in events if e.stage == "download" and e.total]
    assert downloads[-1].done == downloads[-1].total  # the count includes the resumed part exactly once


def test_a_small_non_lfs_file_is_checked_by_its_git_hash(hub, lib, tmp_path):
    """config.json is no LFS file: the hub lists only its git blob id. Altered bytes of the same size are
    refused like an LFS file's, by that id, and nothing is imported."""
    from app.modelhub.hub import RemoteFile, verify
    from tests.modelhub.hub_server import git_blob_id

    good = b'{"model_type": "qwen2_5_vl"}\n'
    remote = RemoteFile("config.json", len(good), None, git_blob_id(good))
    f = tmp_path / "config.json"
    f.write_bytes(good)
    verify(f, remote)  # the right bytes pass
    f.write_bytes(good.replace(b"qwen", b"QWEN"))  # same size, other content
    with pytest.raises(HubError, match=r"config\.json.*git-sha1") as e:
        verify(f, remote)
    assert e.value.kind == "integrity" and not f.exists()

    hub.faults.corrupt = {"config.json"}
    with pytest.raises(HubError, match=r"config\.json") as e:
        PullJob(NAME, quant="Q8_0", library=lib).run()
    assert e.value.kind == "integrity"
    assert lib.user_entries() == [] and not list((lib.root / ".pulls").rglob("config.json"))
