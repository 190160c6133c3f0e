"""The OpenAI-compatible client against a real `transformers serve` over a tiny local model.

The module builds a random 2-layer Llama with its own tokenizer (seconds, no download) and
serves it on CPU; the answers are gibberish, but every request goes through a real server.
Behaviour the transformers server cannot show (429/503 then success, a server honouring `n`,
a body without `usage`) is checked against a few lines of stdlib HTTP server instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from llm_fixtures import free_port

from evo.errors import EvoError
from evo.llm.client import (
    Completion,
    Endpoint,
    LLMClient,
    LLMRequestError,
    LLMUnavailable,
    parse_endpoints,
)

MESSAGES = [
    {"role": "system", "content": "You improve Python programs."},
    {"role": "user", "content": "def f(x):\n    return x * 2\n"},
]
MAX_TOKENS = 12  # gibberish either way; short keeps the module fast on 2 CPU cores


@pytest.fixture(scope="module")
def server(llm_server: tuple[str, Path]) -> tuple[str, Path]:
    """`(base_url, model_dir)` of the session's live `transformers serve` (tests/conftest.py)."""
    return llm_server


def dead_url() -> str:
    """A URL on which nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


# ----- against transformers serve -----


def test_models_lists_the_served_model(server: tuple[str, Path]) -> None:
    base_url, model_dir = server

    async def go() -> tuple[list[str], list[str]]:
        async with LLMClient([Endpoint(base_url)]) as client:
            # With or without the /v1 suffix: both spellings are common in configs.
            return await client.models(base_url), await client.models(base_url + "/v1/")

    plain, with_v1 = asyncio.run(go())
    assert plain == with_v1 == [str(model_dir)]


def test_chat_returns_n_samples_with_token_counts(server: tuple[str, Path]) -> None:
    base_url, model_dir = server
    client = LLMClient([Endpoint(base_url)])  # model read from /v1/models

    async def go() -> tuple[Completion, Completion]:
        try:
            first = await client.chat(MESSAGES, n=3, max_tokens=MAX_TOKENS, temperature=1.0)
            # transformers serve answers one choice whatever n is: the client made up the
            # difference with separate requests, and now goes straight to them.
            second = await client.chat(MESSAGES, n=2, max_tokens=MAX_TOKENS)
            return first, second
        finally:
            await client.aclose()

    first, second = asyncio.run(go())
    assert len(first.texts) == 3 and len(second.texts) == 2
    assert all(isinstance(t, str) for t in first.texts + second.texts)
    assert first.prompt_tokens > 0 and 0 < first.completion_tokens <= 3 * MAX_TOKENS
    assert first.model == str(model_dir)
    assert first.endpoint == base_url
    assert first.seconds > 0
    # 3 + 2 samples, one request each: the second call did not ask for n=2 first.
    assert client.successes[base_url] == 5
    assert client.failures[base_url] == 0


def test_seeded_rng_reproduces_samples(server: tuple[str, Path]) -> None:
    base_url, _ = server

    async def sample(seed: int) -> list[str]:
        async with LLMClient([Endpoint(base_url)]) as client:
            result = await client.chat(
                MESSAGES, max_tokens=MAX_TOKENS, temperature=1.0, rng=np.random.default_rng(seed)
            )
            return result.texts

    # Sequential requests: the server seeds torch from the request's `seed` field.
    assert asyncio.run(sample(7)) == asyncio.run(sample(7))


def test_concurrent_chats_all_complete(server: tuple[str, Path]) -> None:
    base_url, model_dir = server
    client = LLMClient([Endpoint(base_url, model=str(model_dir))], concurrency=4)

    async def go() -> list[Completion]:
        try:
            return await asyncio.gather(*(client.chat(MESSAGES, max_tokens=8) for _ in range(8)))
        finally:
            await client.aclose()

    results = asyncio.run(go())
    assert len(results) == 8
    assert all(len(r.texts) == 1 and r.completion_tokens > 0 for r in results)
    assert client.successes[base_url] == 8


def test_client_survives_successive_event_loops(server: tuple[str, Path]) -> None:
    base_url, _ = server
    client = LLMClient([Endpoint(base_url)])
    # No aclose in between: the second asyncio.run must not reuse the first loop's connections.
    for _ in range(2):
        assert len(asyncio.run(client.chat(MESSAGES, max_tokens=4)).texts) == 1
    asyncio.run(client.aclose())


def test_rejected_request_raises_at_once_with_server_message(server: tuple[str, Path]) -> None:
    base_url, _ = server
    client = LLMClient([Endpoint(base_url, model="no-such-model")], retries=3, backoff_s=5.0)
    start = time.perf_counter()
    with pytest.raises(LLMRequestError, match=r"HTTP 400.*pinned"):
        asyncio.run(client.chat(MESSAGES, max_tokens=4))
    # A 4xx is our mistake: no retry, so none of the 5 s backoffs was waited.
    assert time.perf_counter() - start < 4.0
    assert client.failures[base_url] == 0


def test_dead_endpoint_raises_unavailable_after_retries_quickly() -> None:
    url = dead_url()
    for model in ("m", None):  # None: the failure happens while reading /v1/models
        client = LLMClient([Endpoint(url, model=model)], retries=2, backoff_s=0.01)
        start = time.perf_counter()
        with pytest.raises(LLMUnavailable, match=r"after 3 attempts") as info:
            asyncio.run(client.chat(MESSAGES, max_tokens=4))
        assert time.perf_counter() - start < 3.0
        assert client.failures[url] == 3
        assert "ConnectError" in str(info.value) and url in str(info.value)
        assert isinstance(info.value, EvoError)  # the CLI prints it without a traceback

    with pytest.raises(LLMUnavailable, match="Could not list the models"):
        asyncio.run(LLMClient([Endpoint(url)]).models(url))


def test_ensemble_fails_over_from_dead_to_live_endpoint(server: tuple[str, Path]) -> None:
    """A request that fails on one endpoint is retried at once on another; the failed one is
    then passed over by later requests for `cooldown_s`, so it costs one failure, not one each."""
    base_url, _ = server
    dead = dead_url()
    # The dead endpoint gets almost all the weight, so the first pick is (seeded) the dead one.
    endpoints = [Endpoint(dead, model="m", weight=100.0), Endpoint(base_url, weight=1.0)]
    rng = np.random.default_rng(0)

    client = LLMClient(endpoints, retries=1, backoff_s=5.0, cooldown_s=60.0)
    start = time.perf_counter()
    results = [asyncio.run(client.chat(MESSAGES, max_tokens=4, rng=rng)) for _ in range(4)]
    assert all(r.endpoint == base_url and len(r.texts) == 1 for r in results)
    assert client.failures[dead] == 1
    assert client.successes[base_url] == 4
    assert time.perf_counter() - start < 4.0  # failing over to an untried endpoint does not back off

    # Without a cool-down every request tries the heavy dead endpoint first, and still succeeds.
    client = LLMClient(endpoints, retries=1, backoff_s=5.0, cooldown_s=0.0)
    results = [asyncio.run(client.chat(MESSAGES, max_tokens=4, rng=rng)) for _ in range(3)]
    assert all(r.endpoint == base_url for r in results)
    assert client.failures[dead] >= 2 and client.successes[base_url] == 3


# ----- against a scripted stdlib server -----


class _Scripted(ThreadingHTTPServer):
    """Answers POST /v1/chat/completions with the queued (status, body) pairs, then 200s."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, dict[str, object]]], honour_n: bool) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script = list(script)
        self.honour_n = honour_n
        self.requests: list[dict[str, object]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: _Scripted

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:  # noqa: N802  # the name http.server dispatches to
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.server.script:
            status, reply = self.server.script.pop(0)
        else:
            n = int(body.get("n", 1)) if self.server.honour_n else 1
            status = 200
            reply = {
                "model": body["model"],
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": f"s{i}"}} for i in range(n)
                ],
            }  # no `usage`: counted as 0
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)


Scripted = Callable[..., _Scripted]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """A factory of scripted servers, each shut down after the test."""
    servers: list[_Scripted] = []

    def make(script: list[tuple[int, dict[str, object]]], honour_n: bool = True) -> _Scripted:
        srv = _Scripted(script, honour_n)
        # A short poll interval: shutdown() waits up to one interval.
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_retries_429_and_5xx_then_succeeds(scripted: Scripted) -> None:
    srv = scripted([(429, {"error": {"message": "busy"}}), (503, {"detail": "restarting"})])
    client = LLMClient([Endpoint(srv.url, model="m")], retries=2, backoff_s=0.01)
    result = asyncio.run(client.chat(MESSAGES, max_tokens=4))
    assert result.texts == ["s0"]
    assert result.prompt_tokens == result.completion_tokens == 0  # no usage field
    assert len(srv.requests) == 3 and client.failures[srv.url] == 2


def test_retries_exhausted_on_5xx_report_server_messages(scripted: Scripted) -> None:
    srv = scripted([(500, {"error": {"message": "CUDA out of memory"}})] * 3)
    client = LLMClient([Endpoint(srv.url, model="m")], retries=1, backoff_s=0.01)
    with pytest.raises(LLMUnavailable, match="CUDA out of memory"):
        asyncio.run(client.chat(MESSAGES, max_tokens=4))
    assert len(srv.requests) == 2


def test_server_honouring_n_gets_one_request(scripted: Scripted) -> None:
    srv = scripted([], honour_n=True)
    client = LLMClient([Endpoint(srv.url, model="m")])
    result = asyncio.run(client.chat(MESSAGES, n=4, max_tokens=4, rng=np.random.default_rng(1)))
    assert result.texts == ["s0", "s1", "s2", "s3"]
    assert len(srv.requests) == 1
    assert srv.requests[0]["n"] == 4 and isinstance(srv.requests[0]["seed"], int)


def test_server_ignoring_n_gets_separate_requests(scripted: Scripted) -> None:
    srv = scripted([], honour_n=False)
    client = LLMClient([Endpoint(srv.url, model="m")])
    assert len(asyncio.run(client.chat(MESSAGES, n=3, max_tokens=4)).texts) == 3
    assert len(srv.requests) == 3  # one with n=3 answered by one choice, then two with n=1
    assert "n" not in srv.requests[1]
    assert len(asyncio.run(client.chat(MESSAGES, n=3, max_tokens=4)).texts) == 3
    assert len(srv.requests) == 6  # remembered: three separate requests at once


# ----- parse_endpoints and validation -----


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("http://127.0.0.1:8000", [Endpoint("http://127.0.0.1:8000")]),
        (
            "http://a:8000@2,http://b:8000#qwen@1",
            [Endpoint("http://a:8000", weight=2.0), Endpoint("http://b:8000", model="qwen", weight=1.0)],
        ),
        ("https://h/v1#Qwen/Qwen2.5-7B@0.5", [Endpoint("https://h/v1", model="Qwen/Qwen2.5-7B", weight=0.5)]),
        # A suffix after '@' that is no number is a revision of the model, not a weight.
        ("http://h:1#org/model@dev", [Endpoint("http://h:1", model="org/model@dev")]),
        (" http://a:1 , http://b:2 ", [Endpoint("http://a:1"), Endpoint("http://b:2")]),
    ],
)
def test_parse_endpoints_good(spec: str, expected: list[Endpoint]) -> None:
    assert parse_endpoints(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "http://a:1,,http://b:2",
        "localhost:8000",
        "ftp://a:1",
        "http://a:1@x",
        "http://a:1@0",
        "http://a:1@-2",
        "http://a:1@nan",
        "http://a:1#",
        "http://a:port",
    ],
)
def test_parse_endpoints_bad(spec: str) -> None:
    with pytest.raises(EvoError, match=r"URL\[#model\]\[@weight\], e\.g\. --llm http://"):
        parse_endpoints(spec)


def test_endpoint_root_strips_v1() -> None:
    assert Endpoint("http://a:1/v1/").root == Endpoint("http://a:1/").root == "http://a:1"


def test_client_rejects_bad_settings() -> None:
    with pytest.raises(EvoError, match="No LLM endpoint"):
        LLMClient([])
    with pytest.raises(EvoError, match="weight"):
        LLMClient([Endpoint("http://a:1", weight=0.0)])


# ----- outages: every endpoint down -----


def test_outage_pauses_the_calls_and_probes_one_at_a_time(scripted: Scripted, caplog: pytest.LogCaptureFixture) -> None:
    """While every endpoint is down, one call at a time probes it after a pause that doubles; the
    other calls wait without sending anything, then all go once a probe is answered."""
    srv = scripted([(503, {"error": {"message": "restarting"}})] * 3)
    client = LLMClient([Endpoint(srv.url, model="m")], retries=0, backoff_s=0.0, pause_s=0.2, max_pause_s=0.4)

    async def go() -> tuple[list[object], float]:
        with pytest.raises(LLMUnavailable):  # request 1: the outage begins
            await client.chat(MESSAGES, max_tokens=4)
        assert client.in_outage and client.outages == 1
        start = time.perf_counter()
        results = await asyncio.gather(*(client.chat(MESSAGES, max_tokens=4) for _ in range(5)),
                                       return_exceptions=True)
        return results, time.perf_counter() - start

    with caplog.at_level(logging.WARNING, logger="evo.llm.failover"):
        results, seconds = asyncio.run(go())
    failed = [r for r in results if isinstance(r, LLMUnavailable)]
    assert len(failed) == 2  # requests 2 and 3: the probes that found it still down
    assert all(isinstance(r, Completion) for r in results if r not in failed)
    assert len(srv.requests) == 3 + 3  # the waiting calls sent nothing until it was back
    assert seconds >= 0.2 + 0.4 + 0.4 - 0.05  # pauses of 0.2, 0.4, then capped at 0.4
    assert not client.in_outage and client.outages == 1
    text = caplog.text
    assert "unreachable" in text and "still unreachable" in text and "answer again" in text


def test_a_rejected_request_or_an_empty_reply_fails_the_call_not_the_run(scripted: Scripted) -> None:
    """A prompt over the model's context (a long parent) is refused with HTTP 400: that call is an operator
    failure with the server's reason, as a reply without choices is, and the next call goes on."""
    from evo.errors import OperatorError
    from evo.operators.base import ProposalRequest
    from evo.operators.llm import LLMOperator
    from evo.program import Program

    srv = scripted([(400, {"error": {"message": "The prompt has 3100 tokens, but the model takes at most 2048"}}),
                    *[(200, {"id": "x", "object": "chat.completion"})] * 2,  # asked once more for the choice missing
                    (200, {"model": "m", "choices": [{"message": {"content": "```python\nx = 2\n```"}}]})])
    op = LLMOperator(LLMClient([Endpoint(srv.url, model="m")], retries=0), mode="rewrite")
    request = ProposalRequest(parents=[Program(source="x = 1\n")], task_prompt="make x larger")
    with pytest.raises(OperatorError, match=r"HTTP 400: The prompt has 3100 tokens"):
        asyncio.run(op.propose(request))
    with pytest.raises(OperatorError, match="held no choices"):
        asyncio.run(op.propose(request))
    (child,) = asyncio.run(op.propose(request))
    assert child.source.strip() == "x = 2" and len(srv.requests) == 4
