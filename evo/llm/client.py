"""An async client for OpenAI-compatible chat servers (`vllm serve`, `transformers serve`, ...).

One `LLMClient` talks to an ensemble of endpoints, each with a weight; which endpoint each HTTP
request goes to, the cool-down of one that failed and the pause of an outage (every endpoint
down) are `evo.llm.failover.Failover`'s. Failures are expected over a long search (a server
restarts, a GPU node is pre-empted, a server sheds load with 429), so a request that fails for a
transient reason is retried, first on the endpoints it has not tried yet (at once), then with
exponential backoff. Only when every attempt failed does `chat` raise `LLMUnavailable` (and the
calls after it wait out the outage's pause). A request the server rejects (a 4xx other than
408/429) is a mistake of ours and is not retried: `LLMRequestError`.

Endpoints serving the same model form one *model group* (`model_groups`): the operator bandit
chooses a group per call (`prefer=`), the client sends the call to that group first and fails
over to the other groups only when the whole group has failed it.

With a `roster` (`--llm ray`: a Ray cluster's LLM replicas), the endpoint list is re-read while
the search runs (`evo.llm.endpoints.Roster`): a replica restarted at a new URL replaces its old
one with its weight, new replicas join, stopped ones leave, and an outage's pause ends early
when the list changes.

HTTP goes through `httpx2` (the maintained continuation of httpx, already a dependency of
`huggingface_hub` and so of `transformers`); the `openai` package is not needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import numpy as np

from evo.errors import EvoError
from evo.llm.endpoints import (
    SPEC_EXAMPLE,
    Endpoint,
    Roster,
    model_groups,
    model_ids,
    parse_endpoints,
    server_message,
)
from evo.llm.failover import Failover

__all__ = [
    "Completion",
    "Endpoint",
    "LLMClient",
    "LLMError",
    "LLMRequestError",
    "LLMUnavailable",
    "LoopLock",
    "PreferredModel",
    "model_groups",
    "parse_endpoints",
]

# Statuses worth another try: the server is overloaded, restarting or behind a flaky proxy.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0  # a server asking us to wait longer than this is treated as down


class LLMError(EvoError):
    """Base of the LLM client's failures."""


class LLMUnavailable(LLMError):
    """No endpoint answered after all the retries (down, unreachable, overloaded, timing out)."""

    def __init__(self, message: str, last_error: str = "") -> None:
        super().__init__(message)
        self.last_error = last_error  # the last attempt's failure, e.g. "attempt 4 on URL: ConnectError: ..."


class LLMRequestError(LLMError):
    """A server rejected the request itself (4xx other than 408/429): retrying would not help."""


class _Transient(Exception):
    """One attempt failed for a reason that another attempt may not meet (internal)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoopLock:
    """An asyncio.Lock remade per event loop (a lock binds to the loop that first waits on it,
    and a client may be used from successive `asyncio.run` calls)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock


@dataclass
class Completion:
    """The answer to one `chat` call: `texts` holds the n samples.

    A reasoning model's thinking may sit inside `texts` (``<think>`` sections) or, from a server
    that separates it (vLLM's reasoning parser), in `reasoning`; `evo.llm.reasoning` splits both.
    `completion_tokens` counts every generated token, the thinking's included.
    """

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    model: str
    endpoint: str  # the endpoint(s) that served the samples, comma-joined in order of first use
    seconds: float
    reasoning: list[str] = field(default_factory=list)  # per sample: the server's separate thinking ("" if none)
    truncated: list[bool] = field(default_factory=list)  # per sample: stopped by the token limit (empty: unknown)
    reasoning_tokens: int | None = None  # of completion_tokens, as the server(s) reported; None: not reported


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class LLMClient:
    """Chat completions from a weighted ensemble of OpenAI-compatible endpoints.

    `concurrency` bounds the HTTP requests in flight (all endpoints together): the servers
    batch what they get, and a bounded queue keeps their latency, and our timeouts, sane.
    `retries` is how many more attempts a request gets after its first; `backoff_s` the first
    wait between attempts on an endpoint that already failed (doubling each time).
    `cooldown_s` is how long a failed endpoint is passed over by new requests while other
    endpoints are healthy. `pause_s` and `max_pause_s` bound the pause of an outage (see
    `evo.llm.failover`). `roster`: the registry the endpoints follow (their first list is its).
    Use it as an async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        cooldown_s: float = 30.0,
        pause_s: float = 5.0,
        max_pause_s: float = 60.0,
        roster: Roster | None = None,
    ) -> None:
        self.failover = Failover(endpoints, roster=roster, cooldown_s=cooldown_s, pause_s=pause_s,
                                 max_pause_s=max_pause_s)
        if concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0 or not 0 <= pause_s <= max_pause_s:
            raise EvoError(
                "LLMClient needs concurrency >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0 and "
                "0 <= pause_s <= max_pause_s."
            )
        self.roster = roster
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._model_names: dict[str, str] = {}  # endpoint root -> model resolved from /v1/models
        self._ignores_n: set[str] = set()  # roots of servers that answered n > 1 with one choice
        self._rng = np.random.default_rng()
        # The HTTP client and the semaphore belong to one event loop; `_bind` remakes them when
        # the client is used from another (e.g. successive `asyncio.run` calls).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx2.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    # What the failover knows, read here as well: the client's face to operators, serve and tests.

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints now (a roster's latest list)."""
        return self.failover.endpoints

    @property
    def successes(self) -> Counter[str]:
        """Endpoint url -> requests it answered."""
        return self.failover.successes

    @property
    def failures(self) -> Counter[str]:
        """Endpoint url -> transient failures it caused."""
        return self.failover.failures

    @property
    def outages(self) -> int:
        """Outages declared so far (every endpoint failed a call)."""
        return self.failover.outages

    @property
    def in_outage(self) -> bool:
        """Whether the last calls found every endpoint down (and none has answered since)."""
        return self.failover.in_outage

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. The client may still be used afterwards: it reconnects."""
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = self._semaphore = self._loop = None

    def _bind(self) -> tuple[httpx2.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._http is None or self._semaphore is None:
            # A connection to an unreachable host should fail fast; a generation may take long.
            timeout = httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
            limits = httpx2.Limits(
                max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency
            )
            self._http = httpx2.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._http, self._semaphore

    # ----- one HTTP request -----

    async def _send(self, method: str, url: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One attempt: the JSON body of a 2xx answer, `_Transient`, or `LLMRequestError`."""
        http, semaphore = self._bind()
        async with semaphore:
            try:
                response = await http.request(method, url, json=payload)
            except httpx2.TransportError as exc:  # refused, reset, DNS, timeouts
                raise _Transient(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        if response.status_code in RETRY_STATUSES:
            raise _Transient(
                f"HTTP {response.status_code}: {server_message(response)}",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise LLMRequestError(
                f"{url} rejected the request with HTTP {response.status_code}: {server_message(response)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise _Transient(f"HTTP {response.status_code} with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise _Transient(f"HTTP {response.status_code} with a JSON body that is not an object")
        return body

    async def models(self, url: str) -> list[str]:
        """The model names a server lists at `GET /v1/models` (one attempt, no retries)."""
        root = Endpoint(url).root
        try:
            return model_ids(await self._send("GET", f"{root}/v1/models"))
        except _Transient as exc:
            raise LLMUnavailable(f"Could not list the models of {root}: {exc}") from exc

    async def _model_of(self, endpoint: Endpoint) -> str:
        if endpoint.model is not None:
            return endpoint.model
        root = endpoint.root
        if root not in self._model_names:
            names = model_ids(await self._send("GET", f"{root}/v1/models"))  # _Transient propagates: an attempt failed
            if not names:
                raise LLMRequestError(
                    f"{root} lists no model at /v1/models: name one in the endpoint, e.g. {root}#MODEL"
                )
            # Concurrent first requests may all ask; they get the same answer, so no lock is needed.
            self._model_names[root] = names[0]
        return self._model_names[root]

    # ----- one chat completion, with retries -----

    async def _post_chat(
        self, payload: dict[str, Any], rng: np.random.Generator, prefer: Sequence[int] | None,
        endpoints: Sequence[Endpoint],
    ) -> tuple[dict[str, Any], Endpoint]:
        """POST one chat completion with failover and backoff; returns the body and who answered.
        `endpoints`: the list of the call (`prefer` indexes it), whatever a roster changes meanwhile."""
        tried: set[int] = set()
        errors: list[str] = []
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            index = self.failover.pick(rng, tried, prefer, endpoints)
            endpoint = endpoints[index]
            if index in tried:
                # Every endpoint has failed this request already: wait before hammering one again.
                delay = self.backoff_s * 2 ** max(0, attempt - len(endpoints))
                if retry_after is not None:
                    delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
                await asyncio.sleep(delay)
            try:
                body = await self._send(
                    "POST",
                    f"{endpoint.root}/v1/chat/completions",
                    {**payload, "model": await self._model_of(endpoint)},
                )
            except _Transient as exc:
                tried.add(index)
                retry_after = exc.retry_after
                errors.append(f"attempt {attempt + 1} on {endpoint.url}: {exc}")
                self.failover.failed(endpoint)
                continue
            self.failover.answered(endpoint)
            return body, endpoint
        urls = ", ".join(dict.fromkeys(e.url for e in endpoints))
        raise LLMUnavailable(
            f"No LLM server answered after {self.retries + 1} attempts ({urls}):\n  "
            + "\n  ".join(errors)
            + "\nIs the server running and reachable? Start one with `evo llm serve`, or check the --llm "
            f"endpoints (e.g. --llm {SPEC_EXAMPLE}).",
            last_error=errors[-1] if errors else "",
        )

    # ----- the public call -----

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
        prefer: Sequence[int] | str | None = None,
    ) -> Completion:
        """Sample `n` answers to `messages`.

        `rng` picks the endpoints and, when given, seeds the server's sampling (the `seed`
        field), so that a seeded search asks for the same samples where the server honours it.
        A server that answers `n > 1` with fewer choices (as `transformers serve` does) gets the
        missing samples as separate requests, and is remembered so that later calls send it
        n separate requests at once. `prefer` (endpoint indices, e.g. a value of `model_groups`, or
        a model group's label) are tried first; the others only when all of them failed this call.
        During an outage the call first waits for its turn (see `evo.llm.failover`).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        probing = await self.failover.await_turn()
        try:
            completion = await self._chat(messages, n, max_tokens, temperature, rng, prefer)
        except LLMUnavailable as exc:
            self.failover.outage(exc.last_error or str(exc).splitlines()[0], probing)
            raise
        finally:
            self.failover.end_turn(probing)
        self.failover.recovered()
        return completion

    async def _chat(
        self,
        messages: list[dict[str, str]],
        n: int,
        max_tokens: int,
        temperature: float,
        rng: np.random.Generator | None,
        prefer: Sequence[int] | str | None,
    ) -> Completion:
        endpoints = self.failover.endpoints
        if isinstance(prefer, str):  # a label, resolved in this call's list: a roster may have changed it
            prefer = model_groups(endpoints).get(prefer)
        seeded = rng is not None
        rng = rng if rng is not None else self._rng
        start = time.perf_counter()

        def payload(k: int) -> dict[str, Any]:
            body: dict[str, Any] = {
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": False,
            }
            if k > 1:  # left out when 1: the default everywhere, and some servers dislike the field
                body["n"] = k
            if seeded:
                body["seed"] = int(rng.integers(2**31 - 1))
            return body

        bodies: list[tuple[dict[str, Any], Endpoint]] = []
        ask_n = n > 1 and not all(e.root in self._ignores_n for e in endpoints)
        if n == 1 or ask_n:
            body, endpoint = await self._post_chat(payload(n), rng, prefer, endpoints)
            bodies.append((body, endpoint))
            if n > 1 and len(body.get("choices") or []) < n:
                self._ignores_n.add(endpoint.root)
        missing = n - sum(len(b.get("choices") or []) for b, _ in bodies)
        if missing > 0:
            # Payloads are built first so the seeds drawn from rng do not depend on task timing.
            payloads = [payload(1) for _ in range(missing)]
            bodies += await asyncio.gather(*(self._post_chat(p, rng, prefer, endpoints) for p in payloads))

        texts: list[str] = []
        reasoning: list[str] = []
        truncated: list[bool] = []
        prompt_tokens = completion_tokens = 0
        reasoning_tokens: int | None = 0
        for body, _ in bodies:
            for choice in body.get("choices") or []:
                message = choice.get("message") or {}
                texts.append(message.get("content") or "")  # None when the model only called tools
                # vLLM's reasoning parser: `reasoning_content` (up to 0.10), `reasoning` (later versions)
                thinking = message.get("reasoning_content") or message.get("reasoning") or ""
                reasoning.append(thinking if isinstance(thinking, str) else "")
                truncated.append(choice.get("finish_reason") == "length")
            usage = body.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
            details = usage.get("completion_tokens_details") or {}
            reported = details.get("reasoning_tokens") if isinstance(details, dict) else None
            # One body that did not say makes the total unknown (estimated later), never a silent 0.
            reasoning_tokens = None if reported is None or reasoning_tokens is None else \
                reasoning_tokens + int(reported)
        first_body, first_endpoint = bodies[0]
        return Completion(
            texts=texts[:n],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=str(first_body.get("model") or first_endpoint.model or ""),
            endpoint=",".join(dict.fromkeys(e.url for _, e in bodies)),
            seconds=time.perf_counter() - start,
            reasoning=reasoning[:n],
            truncated=truncated[:n],
            reasoning_tokens=reasoning_tokens,
        )


class PreferredModel:
    """A view of an `LLMClient` whose calls go to one model group first (the bandit's arm).

    It shares the client's connections, limits, health and outage state; `aclose` is a no-op
    (the owner of the client closes it).
    """

    def __init__(self, client: LLMClient, label: str, indices: Sequence[int]) -> None:
        self.client = client
        self.label = label
        self.indices = list(indices)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
    ) -> Completion:
        # By label where a roster changes the client's endpoints (the group's indices move); by the indices the
        # group was made with where the list is fixed (two servers may share a label, one group each).
        prefer: Sequence[int] | str = self.label if self.client.roster is not None else self.indices
        return await self.client.chat(messages, n=n, max_tokens=max_tokens, temperature=temperature, rng=rng,
                                      prefer=prefer)

    async def aclose(self) -> None:
        return None
