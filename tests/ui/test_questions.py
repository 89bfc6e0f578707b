"""Issue 26, item 2: a question shows the moment it was typed, waits while the model loads, and no banner stays stale.

Real window, real tiny model in its own process, the real vtest.avi played in real time.
"""

from __future__ import annotations

from pathlib import Path

from app.core.sessions import load_session
from app.core.timefmt import clock

from .conftest import configure

LONG = 60_000


def _question_bubble(w, text: str):  # type: ignore[no-untyped-def]
    return next(b for b in w.watch.chat.bubbles if b.who == "you" and b.text == text)


def test_a_question_typed_while_the_model_is_behind_shows_when_it_was_typed(qtbot, make_window,
                                                                            vtest_avi: Path) -> None:
    """A turn of 4 frames at 1 s: the model decides every 4 s, so a question typed early in a turn rides
    with a step seconds later. The chat must show the moment it was typed, and say the answer comes later."""
    w = make_window(source=str(vtest_avi))
    configure(w, interval=1.0, frames=4, talk=-50)
    w.start()
    qtbot.waitUntil(lambda: w.controller.source is not None and w.controller.stream_time >= 1.0, timeout=LONG)
    assert w.last_result is None, "no step yet: the question is asked ahead of the model's next one"
    typed = w.controller.stream_time
    assert w.ask("Is anyone carrying a bag?")
    bubble = _question_bubble(w, "Is anyone carrying a bag?")
    assert bubble.stamp.startswith(clock(typed)), bubble.stamp
    assert "the answer comes with the next step" in bubble.stamp
    assert "the answer comes with the next step" in bubble.head.text()  # what is drawn, not only the attribute
    qtbot.waitUntil(lambda: w.last_result is not None and bool(w.last_result.question), timeout=LONG)
    carried = w.last_result.video_time
    assert carried >= typed + 2, "the step that carried it came seconds after it was typed"
    assert bubble.stamp == f"{clock(typed)} · asked · sent with the step at {clock(carried)}"
    assert not w.watch.banner.isVisible()
    directory = w.controller.writer.directory
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
    saved = load_session(directory)
    assert [round(q["time"]) for q in saved.questions] == [round(typed)]  # the saved session keeps the moment too


def test_a_question_asked_while_the_model_loads_is_queued_and_sent_with_the_first_step(
        qtbot, make_window, vtest_avi: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, interval=0.5, frames=1, talk=-50)
    w.start()
    assert w.controller.state == "loading"
    assert w.ask("What is happening?"), "queued, not refused"
    assert not w.watch.banner.isVisible(), "no red banner for a question the app can keep"
    bubble = _question_bubble(w, "What is happening?")
    assert "sent with the first step" in bubble.stamp
    qtbot.waitUntil(lambda: w.last_result is not None, timeout=LONG)
    first = w.last_result
    assert first.turn == 0 and first.question == "What is happening?", "it rode with the very first step"
    assert "sent with the first step" not in bubble.stamp
    assert not w.watch.banner.isVisible()
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)


def test_a_question_before_start_is_refused_and_its_banner_goes_when_watching_starts(
        qtbot, make_window, vtest_avi: Path) -> None:
    w = make_window(source=str(vtest_avi))
    configure(w, interval=0.5, frames=1, talk=-50)
    w.show()
    w.watch.question.setText("Who is there?")
    w.ask_from_box()
    assert w.watch.banner.isVisible() and w.watch.banner.text().startswith("Start watching first")
    assert w.watch.question.text() == "Who is there?", "the question is kept in the box to ask again"
    w.watch.question.clear()  # the user gave up on the question: its banner has no cause left
    assert not w.watch.banner.isVisible()
    w.watch.question.setText("Who is there?")
    w.ask_from_box()
    assert w.watch.banner.isVisible()
    w.start()  # the cause is gone once watching starts
    assert not w.watch.banner.isVisible()
    qtbot.waitUntil(lambda: w.state == "running", timeout=LONG)
    assert not w.watch.banner.isVisible()
    w.watch.question.setText("Who is there?")
    w.ask_from_box()
    assert not w.watch.banner.isVisible() and w.watch.question.text() == ""
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=LONG)
