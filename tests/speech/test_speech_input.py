"""Push-to-talk recording and whisper.cpp transcription plumbing.

The microphone is the one thing faked (tests/speech/fake_sounddevice.py plays a WAV of real
espeak-ng speech into the real recorder). No whisper model can be downloaded here, so the test that
needs weights runs only when DUET_WHISPER_MODEL points at a ggml-*.bin; everything around it —
the child process, model checks, a crashing model, the offline download path — runs for real.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from app.speech.recorder import AudioUnavailable, PushToTalkRecorder, input_devices
from app.speech.stt import (
    GGML_MAGIC,
    SpeechModelError,
    Transcriber,
    check_model_file,
    download_model,
    find_model,
    model_filename,
)
from app.speech.tts import Speaker

from .fake_sounddevice import FakeSoundDevice


@pytest.fixture(scope="module")
def spoken_question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """"What is in the pan?" spoken by espeak-ng, as 16 kHz float32 (what a microphone would give)."""
    out = tmp_path_factory.mktemp("voice")
    speaker = Speaker(output_dir=out)
    speaker.say("What is in the pan?")
    assert speaker.wait_idle(60)
    speaker.close()
    with wave.open(str(speaker.files[0])) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    t = np.arange(0, len(pcm) / rate, 1 / 16000)
    return np.interp(t, np.arange(len(pcm)) / rate, pcm).astype(np.float32)


def test_recorder_collects_what_the_device_delivers(spoken_question: np.ndarray) -> None:
    sd = FakeSoundDevice(spoken_question)
    rec = PushToTalkRecorder(sd=sd)
    rec.start()
    assert rec.recording
    assert sd.fed_all.wait(10)
    audio = rec.stop()
    assert not rec.recording
    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_array_equal(audio, spoken_question)


def test_recorder_caps_a_stuck_push_to_talk() -> None:
    sd = FakeSoundDevice(np.ones(16000 * 3, np.float32))
    rec = PushToTalkRecorder(sd=sd, max_seconds=1.0)
    rec.start()
    assert sd.fed_all.wait(10)
    assert 16000 <= len(rec.stop()) < 16000 + 1024


def test_no_input_device_is_a_message_not_a_crash() -> None:
    rec = PushToTalkRecorder(sd=FakeSoundDevice(has_input=False))
    with pytest.raises(AudioUnavailable, match="No microphone"):
        rec.start()
    assert not rec.recording
    assert rec.stop().size == 0


def test_real_portaudio_without_a_microphone() -> None:
    """On this machine PortAudio is installed but there is no sound card: the real path must say so."""
    if input_devices():
        pytest.skip("this machine has a microphone")
    with pytest.raises(AudioUnavailable):
        PushToTalkRecorder().start()


def test_model_file_checks(tmp_path: Path) -> None:
    assert find_model("base.en", tmp_path) is None
    with pytest.raises(SpeechModelError, match="not found"):
        check_model_file(tmp_path / model_filename("base.en"))
    bad = tmp_path / model_filename("base.en")
    bad.write_bytes(b"<html>rate limited</html>")
    assert find_model("base.en", tmp_path) == bad
    with pytest.raises(SpeechModelError, match="bad magic"):
        check_model_file(bad)


def test_damaged_model_crashes_only_the_child_process(tmp_path: Path) -> None:
    """whisper.cpp aborts on a damaged file; in its own process that is a message, and we live on."""
    damaged = tmp_path / model_filename("tiny.en")
    damaged.write_bytes(GGML_MAGIC + np.random.default_rng(0).bytes(50_000))
    with pytest.raises(SpeechModelError, match="could not be loaded"):
        Transcriber(damaged, load_timeout=60)


def test_download_offline_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(SpeechModelError, match="offline") as e:
        download_model("tiny.en", tmp_path)
    assert model_filename("tiny.en") in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.skipif(not os.environ.get("DUET_WHISPER_MODEL"),
                    reason="needs whisper.cpp weights (set DUET_WHISPER_MODEL=/path/ggml-base.en.bin)")
def test_transcribes_a_spoken_question(spoken_question: np.ndarray) -> None:
    t = Transcriber(Path(os.environ["DUET_WHISPER_MODEL"]))
    try:
        text = t.transcribe(spoken_question)
    finally:
        t.close()
    assert "pan" in text.lower()


DOWNLOAD_CHILD = """
import sys
from pathlib import Path
from app.speech.stt import download_model, check_model_file
seen = []
path = download_model("tiny.en", Path(sys.argv[1]), progress=lambda d, t: seen.append((d, t)))
check_model_file(path)
print(path)
print(seen[-1][0], seen[-1][1])
"""


def test_download_path_against_a_loopback_hub(tmp_path: Path) -> None:
    """The real hub client (listing, HEAD, GET, sha256, progress) against the loopback stand-in hub."""
    import subprocess
    import sys

    from ..modelhub.hub_server import StandInHub

    payload = GGML_MAGIC + bytes(range(256)) * 400
    with StandInHub({"ggerganov/whisper.cpp": {"ggml-tiny.en.bin": payload, "README.md": b"whisper"}}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        out = subprocess.run([sys.executable, "-c", DOWNLOAD_CHILD, str(tmp_path / "speech")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        hub.faults.corrupt = {"ggml-tiny.en.bin"}  # a mirror that alters the bytes is refused
        bad = subprocess.run([sys.executable, "-c", DOWNLOAD_CHILD, str(tmp_path / "bad")], env=env,
                             capture_output=True, text=True, timeout=120)
    path_line, progress_line = out.stdout.strip().splitlines()[-2:]
    assert Path(path_line) == tmp_path / "speech" / "ggml-tiny.en.bin"
    assert Path(path_line).read_bytes() == payload
    assert progress_line == f"{len(payload)} {len(payload)}"
    assert find_model("tiny.en", tmp_path / "speech") == Path(path_line)
    assert bad.returncode != 0 and "the bytes are not the repository's" in bad.stderr
    assert find_model("tiny.en", tmp_path / "bad") is None
