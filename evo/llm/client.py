"""An async client for OpenAI-compatible chat servers (`vllm serve`, `transformers serve`, ...).

One `LLMClient` talks to an ensemble of endpoints, each with a weight: every HTTP request picks
an endpoint at random in proportion to the weights, so a big and a small model can share the
work in a chosen ratio. Failures are expected over a long search (a server restarts, a GPU node
is pre-empted, a server sheds load with 429), so a request that fails for a transient reason
is retried, first on the endpoints it has not tried yet (at once), then with exponential
backoff; an endpoint that failed is avoided by later requests for a cool-down period. Only
when every attempt failed does `chat` raise `LLMUnavailable`. A request the server rejects
(a 4xx other than 408/429) is a mistake of ours and is not retried: `LLMRequestError`.

HTTP goes through `httpx2` (the maintained continuation of httpx, already a dependency of
`huggingface_hub` and so of `transformers`); the `openai` package is not needed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import numpy as np

from evo.errors import EvoError

__all__ = [
    "Completion",
    "Endpoint",
    "LLMClient",
    "LLMError",
    "LLMRequestError",
    "LLMUnavailable",
    "parse_endpoints",
]

SPEC_EXAMPLE = "http://127.0.0.1:8000@2,http://gpu-b:8000#Qwen/Qwen2.5-Coder-7B-Instruct@1"
# Statuses worth another try: the server is overloaded, restarting or behind a flaky proxy.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0  # a server asking us to wait longer than this is treated as down


class LLMError(EvoError):
    """Base of the LLM client's failures."""


class LLMUnavailable(LLMError):
    """No endpoint answered after all the retries (down, unreachable, overloaded, timing out)."""


class LLMRequestError(LLMError):
    """A server rejected the request itself (4xx other than 408/429): retrying would not help."""


class _Transient(Exception):
    """One attempt failed for a reason that another attempt may not meet (internal)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server.

    `url` is the server's base URL, with or without the `/v1` suffix. `model` is the name to
    ask for; when None, the first model of `GET /v1/models` is used. `weight` is the share
    of requests it gets, relative to the other endpoints.
    """

    url: str
    model: str | None = None
    weight: float = 1.0

    @property
    def root(self) -> str:
        """The URL without a trailing slash or `/v1`: routes are appended to it."""
        root = self.url.rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root


@dataclass
class Completion:
    """The answer to one `chat` call: `texts` holds the n samples."""

    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    model: str
    endpoint: str  # the endpoint(s) that served the samples, comma-joined in order of first use
    seconds: float


def parse_endpoints(spec: str) -> list[Endpoint]:
    """Parse the `--llm` syntax: comma-separated `URL[#model][@weight]`.

    Example: `http://a:8000@2,http://b:8000#qwen@1` is two endpoints, the first (whose model is
    read from the server) getting twice the requests of the second. A suffix `@...` after the
    model is a weight only when it is a number, so `#org/model@dev` keeps its revision.
    Raises `EvoError` for a malformed spec, with an example of a good one.
    """

    def bad(part: str, why: str) -> EvoError:
        return EvoError(
            f"Bad LLM endpoint {part!r} in {spec!r}: {why}. Expected comma-separated "
            f"URL[#model][@weight], e.g. --llm {SPEC_EXAMPLE}"
        )

    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise bad(spec, "an endpoint is empty")
    endpoints = []
    for part in parts:
        rest, weight = part, 1.0
        head, at, tail = part.rpartition("@")
        if at:
            try:
                weight = float(tail)
            except ValueError:
                # Not a number: an '@' inside the model name (a revision) is fine, elsewhere not.
                if "#" not in head:
                    raise bad(part, f"the weight {tail!r} is not a number") from None
            else:
                if not (math.isfinite(weight) and weight > 0):
                    raise bad(part, f"the weight {tail!r} must be a positive number")
                rest = head
        url, hash_, model = rest.partition("#")
        if hash_ and not model:
            raise bad(part, "the model name after '#' is empty")
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise bad(part, f"{url!r} is not an http(s) URL with a host")
        try:
            split.port  # noqa: B018  # raises on a non-numeric port
        except ValueError:
            raise bad(part, f"{url!r} has an invalid port") from None
        endpoints.append(Endpoint(url=url, model=model or None, weight=weight))
    return endpoints


def _server_message(response: httpx2.Response) -> str:
    """The human part of an error response: OpenAI/vLLM `error.message`, FastAPI `detail`, or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if error:
            return str(error)
        if body.get("detail"):
            return str(body["detail"])
        if body.get("message"):
            return str(body["message"])
    return str(body)[:500]


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
    endpoints are healthy. Use it as an async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        cooldown_s: float = 30.0,
    ) -> None:
        if not endpoints:
            raise EvoError(f"No LLM endpoint given: pass at least one, e.g. --llm {SPEC_EXAMPLE}")
        if any(not (math.isfinite(e.weight) and e.weight > 0) for e in endpoints):
            raise EvoError("Every LLM endpoint weight must be a positive number.")
        if concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise EvoError(
                "LLMClient needs concurrency >= 1, retries >= 0, timeout_s > 0 and backoff_s >= 0."
            )
        self.endpoints = list(endpoints)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.cooldown_s = cooldown_s
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
                f"HTTP {response.status_code}: {_server_message(response)}",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise LLMRequestError(
                f"{url} rejected the request with HTTP {response.status_code}: {_server_message(response)}"
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

    def _pick(self, rng: np.random.Generator, tried: set[int]) -> int:
        """An endpoint index by weight, preferring untried-and-healthy, then untried, then any."""
        now = time.monotonic()
        indices = range(len(self.endpoints))
        untried = [i for i in indices if i not in tried]
        healthy = [i for i in untried if self._down_until.get(self.endpoints[i].url, 0.0) <= now]
        candidates = healthy or untried or list(indices)
        if len(candidates) == 1:
            return candidates[0]
        weights = np.array([self.endpoints[i].weight for i in candidates], dtype=float)
        return candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]

    async def _post_chat(
        self, payload: dict[str, Any], rng: np.random.Generator
    ) -> tuple[dict[str, Any], Endpoint]:
        """POST one chat completion with failover and backoff; returns the body and who answered."""
        tried: set[int] = set()
        errors: list[str] = []
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            index = self._pick(rng, tried)
            endpoint = self.endpoints[index]
            if index in tried:
                # Every endpoint has failed this request already: wait before hammering one again.
                delay = self.backoff_s * 2 ** max(0, attempt - len(self.endpoints))
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
                continue
            self.successes[endpoint.url] += 1
            self._down_until.pop(endpoint.url, None)
            return body, endpoint
        urls = ", ".join(dict.fromkeys(e.url for e in self.endpoints))
        raise LLMUnavailable(
            f"No LLM server answered after {self.retries + 1} attempts ({urls}):\n  "
            + "\n  ".join(errors)
            + "\nIs the server running and reachable? Start one with `evo llm serve`, or check the --llm "
            f"endpoints (e.g. --llm {SPEC_EXAMPLE})."
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
    ) -> Completion:
        """Sample `n` answers to `messages`.

        `rng` picks the endpoints and, when given, seeds the server's sampling (the `seed`
        field), so that a seeded search asks for the same samples where the server honours it.
        A server that answers `n > 1` with fewer choices (as `transformers serve` does) gets the
        missing samples as separate requests, and is remembered so that later calls send it
        n separate requests at once.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
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
        ask_n = n > 1 and not all(e.root in self._ignores_n for e in self.endpoints)
        if n == 1 or ask_n:
            body, endpoint = await self._post_chat(payload(n), rng)
            bodies.append((body, endpoint))
            if n > 1 and len(body.get("choices") or []) < n:
                self._ignores_n.add(endpoint.root)
        missing = n - sum(len(b.get("choices") or []) for b, _ in bodies)
        if missing > 0:
            # Payloads are built first so the seeds drawn from rng do not depend on task timing.
            payloads = [payload(1) for _ in range(missing)]
            bodies += await asyncio.gather(*(self._post_chat(p, rng) for p in payloads))

        texts: list[str] = []
        prompt_tokens = completion_tokens = 0
        for body, _ in bodies:
            for choice in body.get("choices") or []:
                message = choice.get("message") or {}
                texts.append(message.get("content") or "")  # None when the model only called tools
            usage = body.get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
        first_body, first_endpoint = bodies[0]
        return Completion(
            texts=texts[:n],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=str(first_body.get("model") or first_endpoint.model or ""),
            endpoint=",".join(dict.fromkeys(e.url for _, e in bodies)),
            seconds=time.perf_counter() - start,
        )
