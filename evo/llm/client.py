"""An async client for OpenAI-compatible chat servers (`vllm serve`, `transformers serve`, ...).

One `LLMClient` talks to an ensemble of endpoints, each with a weight: every HTTP request picks
an endpoint at random in proportion to the weights, so a big and a small model can share the
work in a chosen ratio. Failures are expected over a long search (a server restarts, a GPU node
is pre-empted, a server sheds load with 429), so a request that fails for a transient reason
is retried, first on the endpoints it has not tried yet (at once), then with exponential
backoff; an endpoint that failed is avoided by later requests for a cool-down period. Only
when every attempt failed does `chat` raise `LLMUnavailable`. A request the server rejects
(a 4xx other than 408/429) is a mistake of ours and is not retried: `LLMRequestError`.

When every endpoint is down (the run outlives a server restart, a node reboots), the client
declares an outage: the call that found it raises `LLMUnavailable`, later calls wait (the
proposals pause) while one probe call at a time tries again after a pause that doubles from
`pause_s` up to `max_pause_s`; a warning is logged (logger `evo.llm.client`) when the outage
starts, when the pause grows, and when the servers answer again.

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
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import numpy as np

from evo.errors import EvoError
from evo.llm.endpoints import SPEC_EXAMPLE, Endpoint, Roster, model_groups, parse_endpoints, server_message

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

log = logging.getLogger(__name__)

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
    endpoints are healthy. `pause_s` and `max_pause_s` bound the pause of an outage (see the
    module docstring). `roster`: the registry the endpoints follow (their first list is its).
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
        endpoints = roster.endpoints if roster is not None else endpoints
        if not endpoints:
            raise EvoError(f"No LLM endpoint given: pass at least one, e.g. --llm {SPEC_EXAMPLE}")
        if any(not (math.isfinite(e.weight) and e.weight > 0) for e in endpoints):
            raise EvoError("Every LLM endpoint weight must be a positive number.")
        if concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0 or not 0 <= pause_s <= max_pause_s:
            raise EvoError(
                "LLMClient needs concurrency >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0 and "
                "0 <= pause_s <= max_pause_s."
            )
        self.endpoints = list(endpoints)  # replaced whole (never changed in place) when the roster changes
        self.roster = roster
        self._roster_version = roster.version if roster is not None else 0
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
        self.pause_s = pause_s
        self.max_pause_s = max_pause_s
        self.outages = 0  # outages declared so far (every endpoint failed a call)
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._paused_until = 0.0  # no call starts before this (monotonic) during an outage
        self._pause = pause_s  # the next pause of this outage
        self._probing = False  # a call is testing whether the outage is over
        self.successes: Counter[str] = Counter()  # endpoint url -> requests it answered
        self.failures: Counter[str] = Counter()  # endpoint url -> transient failures it caused
        self._down_until: dict[str, float] = {}  # endpoint url -> monotonic time its cool-down ends
        self._model_names: dict[str, str] = {}  # endpoint root -> model resolved from /v1/models
        self._ignores_n: set[str] = set()  # roots of servers that answered n > 1 with one choice
        self._rng = np.random.default_rng()
        # The HTTP client and the semaphore belong to one event loop; `_bind` remakes them when
        # the client is used from another (e.g. successive `asyncio.run` calls).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx2.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

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
            body = await self._send("GET", f"{root}/v1/models")
        except _Transient as exc:
            raise LLMUnavailable(f"Could not list the models of {root}: {exc}") from exc
        return [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    async def _model_of(self, endpoint: Endpoint) -> str:
        if endpoint.model is not None:
            return endpoint.model
        root = endpoint.root
        if root not in self._model_names:
            body = await self._send("GET", f"{root}/v1/models")  # _Transient propagates: an attempt failed
            names = [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and "id" in m]
            if not names:
                raise LLMRequestError(
                    f"{root} lists no model at /v1/models: name one in the endpoint, e.g. {root}#MODEL"
                )
            # Concurrent first requests may all ask; they get the same answer, so no lock is needed.
            self._model_names[root] = names[0]
        return self._model_names[root]

    # ----- endpoint choice and retries -----

    def _pick(self, rng: np.random.Generator, tried: set[int], prefer: Sequence[int] | None,
              endpoints: Sequence[Endpoint]) -> int:
        """An index of `endpoints` by weight: untried-and-healthy, then untried, then any; at each
        step the preferred endpoints (a model group) first, then the others."""
        now = time.monotonic()
        indices = list(range(len(endpoints)))
        preferred = [i for i in prefer if 0 <= i < len(indices)] if prefer else indices
        untried = [i for i in indices if i not in tried]
        healthy = [i for i in untried if self._down_until.get(endpoints[i].url, 0.0) <= now]
        first = set(preferred)
        candidates = (
            [i for i in healthy if i in first] or healthy
            or [i for i in untried if i in first] or untried
            or preferred
        )
        if len(candidates) == 1:
            return candidates[0]
        weights = np.array([endpoints[i].weight for i in candidates], dtype=float)
        return candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]

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
            index = self._pick(rng, tried, prefer, endpoints)
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
                self.failures[endpoint.url] += 1
                self._down_until[endpoint.url] = time.monotonic() + self.cooldown_s
                if self.roster is not None:
                    self.roster.stale()  # it may have moved: the registry is read again soon
                continue
            self.successes[endpoint.url] += 1
            self._down_until.pop(endpoint.url, None)
            return body, endpoint
        urls = ", ".join(dict.fromkeys(e.url for e in endpoints))
        raise LLMUnavailable(
            f"No LLM server answered after {self.retries + 1} attempts ({urls}):\n  "
            + "\n  ".join(errors)
            + "\nIs the server running and reachable? Start one with `evo llm serve`, or check the --llm "
            f"endpoints (e.g. --llm {SPEC_EXAMPLE}).",
            last_error=errors[-1] if errors else "",
        )

    # ----- outages: every endpoint down -----

    @property
    def in_outage(self) -> bool:
        """Whether the last calls found every endpoint down (and none has answered since)."""
        return self._outage_since is not None

    async def _await_turn(self) -> bool:
        """Wait while an outage pauses the calls; True if this call is the one probing."""
        changed = self._follow()
        while self._outage_since is not None:
            if changed:
                self._paused_until = 0.0  # the endpoints changed: try them now, not after the pause
            wait = self._paused_until - time.monotonic()
            if wait <= 0 and not self._probing:
                self._probing = True
                return True
            await asyncio.sleep(min(max(wait, 0.05), 1.0))
            changed = self._follow()
        return False

    def _follow(self) -> bool:
        """Take up the roster's endpoints if they changed (and start a re-read if one is due); whether they did."""
        if self.roster is None:
            return False
        self.roster.kick()
        if self.roster.version == self._roster_version:
            return False
        self._roster_version = self.roster.version
        self.endpoints = self.roster.endpoints
        return True

    def _outage(self, error: LLMUnavailable, probing: bool) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._pause = self.pause_s
            self.outages += 1
            log.warning("LLM server(s) unreachable (%s). LLM proposals pause and retry in %.0f s; "
                        "evaluations go on.", error.last_error or str(error).splitlines()[0], self._pause)
        elif probing:
            self._pause = min(self._pause * 2, self.max_pause_s)
            log.warning("LLM server(s) still unreachable after %.0f s; next try in %.0f s.",
                        now - self._outage_since, self._pause)
        else:
            return  # a call that was in flight when the outage began: the pause is set already
        self._paused_until = now + self._pause

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.warning("LLM server(s) answer again after %.0f s: LLM proposals resume.",
                        time.monotonic() - self._outage_since)
            self._outage_since = None

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
        During an outage the call first waits for its turn (see the module docstring).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        probing = await self._await_turn()
        try:
            completion = await self._chat(messages, n, max_tokens, temperature, rng, prefer)
        except LLMUnavailable as exc:
            self._outage(exc, probing)
            raise
        finally:
            if probing:
                self._probing = False
        self._recovered()
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
        endpoints = self.endpoints
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
