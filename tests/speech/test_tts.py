"""The speaker with the real pyttsx3 + espeak-ng, speaking into WAV files (no sound card needed)."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import pytest

from app.speech.tts import Speaker


def _frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


def test_newer_reply_supersedes_the_waiting_one(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    holder: dict[str, Speaker] = {}

    def on_event(kind: str, detail: str) -> None:
        events.append((kind, detail))
        # While the first line is being synthesised, two more arrive: only the newest may be spoken.
        if kind == "started" and detail == "A man walks to the left.":
            holder["s"].say("Two people meet near the pole.")
            holder["s"].say("A woman in red crosses the road.")

    # max_age is generous: on a loaded machine espeak can take seconds per file, and this test is about
    # superseding, not staleness (test_stale_and_muted_lines_are_not_spoken covers that).
    speaker = holder["s"] = Speaker(output_dir=tmp_path, on_event=on_event, autostart=False, max_age=120.0)
    speaker.say("A man walks to the left.")
    speaker.start()
    try:
        assert speaker.wait_idle(60)
        if speaker.available is False:
            pytest.fail(f"espeak-ng should be installed here: {speaker.error}")
        assert speaker.spoken == ["A man walks to the left.", "A woman in red crosses the road."], events
        assert ("superseded", "Two people meet near the pole.") in events
        assert len(speaker.files) == 2
        assert all(_frames(p) > 2000 for p in speaker.files)  # real audio, not empty files
    finally:
        speaker.close()


def test_stale_and_muted_lines_are_not_spoken(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    speaker = Speaker(output_dir=tmp_path, on_event=lambda k, d: events.append((k, d)), max_age=0.0,
                      autostart=False)
    speaker.say("old news")
    speaker.start()
    try:
        assert speaker.wait_idle(30)
        assert ("stale", "old news") in events and speaker.spoken == []
        speaker.max_age = 30.0
        speaker.set_muted(True)
        speaker.say("shh")
        assert ("muted", "shh") in events
        speaker.set_muted(False)
        speaker.say("loud and clear")
        assert speaker.wait_idle(30)
        assert speaker.spoken == ["loud and clear"]
    finally:
        speaker.close()


def test_rate_and_voice_are_applied(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    speaker = Speaker(output_dir=tmp_path, rate=90, on_event=lambda k, d: events.append((k, d)))
    try:
        text = "The water is boiling, add the pasta now."
        speaker.say(text)
        assert speaker.wait_idle(60)
        speaker.rate = 380
        speaker.say(text)
        assert speaker.wait_idle(60)
        assert len(speaker.files) == 2, events
        slow, fast = speaker.files
        assert _frames(slow) > 1.5 * _frames(fast)
        assert speaker.voices, "espeak-ng lists its voices"
        speaker.voice = speaker.voices[-1][0]
        speaker.say("Another voice.")
        assert speaker.wait_idle(60)
        assert len(speaker.files) == 3
    finally:
        speaker.close()


def test_no_speech_engine_is_reported_once_and_the_app_goes_on(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    got = threading.Event()

    def on_event(kind: str, detail: str) -> None:
        events.append((kind, detail))
        got.set()

    speaker = Speaker(driver="no_such_driver", output_dir=tmp_path, on_event=on_event)
    try:
        assert got.wait(10)
        for text in ("one", "two", "three"):
            speaker.say(text)
        assert speaker.wait_idle(10)
        assert speaker.available is False
        assert [k for k, _ in events].count("unavailable") == 1
        assert "espeak-ng" in (speaker.error or "")
        assert speaker.spoken == []
    finally:
        speaker.close()
