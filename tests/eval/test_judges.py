"""Judges: offline scoring rules, and the LLM judge against real HTTP servers on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.eval.judges import (
    REPETITION_PROMPT,
    SCORE_PROMPT,
    ExactMatchJudge,
    JudgeCache,
    JudgeError,
    JudgeRequest,
    LLMJudge,
    OverlapJudge,
    judge_all,
    parse_score,
    token_f1,
)
from tests.engine.loopback import refused_port  # bound, never listening: connections are refused

Reply = Callable[[dict], tuple[int, bytes]]


def chat(content: str) -> tuple[int, bytes]:
    body = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    return 200, json.dumps(body).encode()


@contextmanager
def server(reply: Reply) -> Iterator[tuple[str, list[dict]]]:
    """A stdlib HTTP server speaking the chat-completions shape; yields (base URL, received bodies)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
            body["_path"] = self.path
            body["_auth"] = self.headers.get("Authorization")
            seen.append(body)
            code, out = reply(body)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def rubric(body: dict) -> tuple[int, bytes]:
    """A deterministic stand-in for a judge model: 3 if the gold's last word is in the prediction."""
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    if system == REPETITION_PROMPT:
        return chat("Yes." if "New Turn: same" in user else "no")
    gold = user.split("Ground Truth Answer: ")[1].split("\n")[0]
    pred = user.split("Predicted Answer: ")[1]
    return chat("3" if gold.split()[-1].strip(".") in pred else "1")


# ---- offline judges ---------------------------------------------------------------------------

def test_overlap_judge_maps_f1_onto_three_levels() -> None:
    j = OverlapJudge()
    assert j.score("q", "A red circle appeared.", "a red circle appeared") == 2
    assert j.score("q", "A red circle appeared.", "A blue circle appeared.") == 1  # F1 = 2/3 → partial
    assert j.score("q", "A red circle appeared.", "The dog is sleeping.") == 0
    assert token_f1("", "anything") == 0.0
    # by design it cannot see paraphrase: an LLM would give this full marks
    assert j.score("q", "The man opens the door.", "Someone lets himself in.") == 0


def test_overlap_judge_thresholds_are_inclusive() -> None:
    """An F1 exactly at a threshold earns that level: half the words right (F1 = 0.5) at mostly=0.5 is a 2."""
    assert token_f1("red circle", "red square") == 0.5
    assert OverlapJudge(mostly=0.5, partly=0.25).score("q", "red square", "red circle") == 2
    assert OverlapJudge(mostly=0.9, partly=0.5).score("q", "red square", "red circle") == 1


def test_overlap_repetition_is_word_containment() -> None:
    j = OverlapJudge()
    assert j.is_repetition(["A man opens the door.", "He walks in."], "The man walks in.")
    assert not j.is_repetition(["A man opens the door."], "He sits on a red chair.")
    assert not j.is_repetition([], "anything")


def test_exact_match_judge_for_templated_answers() -> None:
    j = ExactMatchJudge()
    assert j.score("q", "A red circle appeared.", "a red circle appeared") == 2
    assert j.score("q", "A red circle appeared.", "A blue square appeared. A red circle appeared.") == 1
    assert j.score("q", "A red circle appeared.", "A red square appeared.") == 0
    assert j.is_repetition(["A red circle appeared."], "a red circle appeared!")
    assert not j.is_repetition(["A red circle appeared."], "A red square appeared.")


def test_parse_score_reads_the_first_character_on_the_1_to_3_scale() -> None:
    assert parse_score("3") == 2 and parse_score("1") == 0 and parse_score(" 2\n") == 1
    assert parse_score("<think>hmm 1</think>3") == 2
    assert parse_score("**2**") == 1
    for bad in ("", "5", "0", "12", "Score: 3", "three"):
        assert parse_score(bad) is None, bad


# ---- LLM judge over loopback HTTP ---------------------------------------------------------------

def test_llm_judge_sends_the_paper_prompt_and_parses_scores() -> None:
    with server(rubric) as (url, seen):
        j = LLMJudge(url, "gpt-4.1", api_key="k123", backoff=0)
        assert j.score("What happens?", "A man opens the door.", "The door is opened.") == 2
        assert j.score("What happens?", "A man opens the door.", "A cat.") == 0
        assert j.is_repetition(["first", "second"], "same") is True
        assert j.is_repetition(["first"], "new") is False
    body = seen[0]
    assert body["_path"] == "/v1/chat/completions" and body["_auth"] == "Bearer k123"
    assert body["model"] == "gpt-4.1" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": SCORE_PROMPT}
    assert body["messages"][1]["content"] == (
        "Question: What happens?\nGround Truth Answer: A man opens the door.\nPredicted Answer: The door is opened.")
    assert seen[2]["messages"][1]["content"] == "Previous Turns: first second\nNew Turn: same\n"


def test_llm_judge_appends_no_think_for_qwen3() -> None:
    with server(lambda b: chat("<think>\n</think>\n2")) as (url, seen):
        assert LLMJudge(url, "Qwen3-8B", backoff=0).score("q", "g", "p") == 1
    assert seen[0]["messages"][1]["content"].endswith("/no_think")


def test_llm_judge_retries_a_flaky_server() -> None:
    calls = {"n": 0}

    def flaky(body: dict) -> tuple[int, bytes]:
        calls["n"] += 1
        return (503, b"{}") if calls["n"] < 3 else chat("3")

    with server(flaky) as (url, _):
        assert LLMJudge(url, "m", retries=2, backoff=0.01).score("q", "g", "p") == 2
    assert calls["n"] == 3


@pytest.mark.parametrize("reply,expect", [
    (lambda b: (200, b"<html>not json</html>"), "not a chat-completions response"),
    (lambda b: (200, b'{"choices": []}'), "not a chat-completions response"),
    (lambda b: chat("I would rate this answer as good."), "unparseable judge output"),
    (lambda b: chat("7"), "unparseable judge output"),
])
def test_llm_judge_garbage_is_retried_then_reported(reply: Reply, expect: str) -> None:
    with server(reply) as (url, seen):
        with pytest.raises(JudgeError, match=expect) as err:
            LLMJudge(url, "m", retries=2, backoff=0).score("q", "g", "p")
    assert len(seen) == 3 and "3 attempt" in str(err.value)


def test_llm_judge_does_not_retry_client_errors() -> None:
    with server(lambda b: (401, b'{"error": "bad key"}')) as (url, seen):
        with pytest.raises(JudgeError, match="HTTP 401"):
            LLMJudge(url, "m", retries=3, backoff=0).score("q", "g", "p")
    assert len(seen) == 1


def test_llm_judge_endpoint_down() -> None:
    with refused_port() as port:
        j = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0, timeout=5)
        with pytest.raises(JudgeError, match="2 attempt"):
            j.score("q", "g", "p")


# ---- cache and batch resolution ---------------------------------------------------------------

def requests_() -> list[JudgeRequest]:
    return [JudgeRequest("score", "A red circle.", "q", "A red circle."),
            JudgeRequest("score", "A blue square.", "q", "A red circle."),
            JudgeRequest("score", "A red circle.", "q", "A red circle."),  # a repeat: judged once
            JudgeRequest("repetition", "same", previous=("x",))]


def test_judge_all_caches_every_verdict_so_a_rerun_costs_nothing(tmp_path) -> None:
    with server(rubric) as (url, seen):
        judge = LLMJudge(url, "m", backoff=0)
        cache = JudgeCache(tmp_path / "cache.sqlite")
        first = judge_all(judge, requests_(), cache, workers=2)
        assert first.judged == 3 and first.cached == 0 and not first.failures and len(seen) == 3
        cache.close()
        again = judge_all(judge, requests_(), JudgeCache(tmp_path / "cache.sqlite"), workers=2)
        assert len(seen) == 3  # no new HTTP call
        assert again.cached == 3 and again.values == first.values
    assert first.values[requests_()[0]] == 2 and first.values[requests_()[1]] == 0
    assert first.values[requests_()[3]] is True


def test_judge_all_reports_failures_and_does_not_cache_them(tmp_path) -> None:
    cache = JudgeCache(tmp_path / "cache.sqlite")
    with refused_port() as port:
        down = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", retries=0, backoff=0, timeout=5)
        out = judge_all(down, requests_(), cache)
    assert not out.values and len(out.failures) == 3
    assert all("attempt" in msg for msg in out.failures.values())
    assert len(cache) == 0
    with server(rubric) as (url, _):
        up = LLMJudge(url, "m", backoff=0)
        up.id = down.id  # same judge, endpoint back: the failed items are simply judged now
        out = judge_all(up, requests_(), cache)
    assert out.judged == 3 and not out.failures and len(cache) == 3


def test_cache_keys_separate_judges(tmp_path) -> None:
    cache = JudgeCache(tmp_path / "c.sqlite")
    req = [JudgeRequest("score", "A red circle appeared. A blue square appeared.", "q", "A red circle appeared.")]
    assert judge_all(ExactMatchJudge(), req, cache).values[req[0]] == 1
    assert judge_all(OverlapJudge(), req, cache).values[req[0]] == 1  # F1 0.67: partial
    assert len(cache) == 2
