"""Where the LLM operators' models are served: the `--llm URL[#model][@weight],...` syntax.

An `Endpoint` is one OpenAI-compatible server (its URL, the model to ask for, its share of the
requests); `parse_endpoints` reads the `--llm` syntax; `model_groups` groups the endpoints that
serve one model, the unit the operator bandit chooses among. A `Roster` is an ensemble that
changes while a search runs (`--llm ray`: the LLM replicas of a Ray cluster, restarted on other
nodes with new URLs, added, stopped), re-read from its registry by a worker thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx2

from evo.errors import EvoError

__all__ = ["SPEC_EXAMPLE", "Endpoint", "Roster", "model_groups", "model_ids", "parse_endpoints", "probe_endpoints"]

log = logging.getLogger(__name__)

SPEC_EXAMPLE = "http://127.0.0.1:8000@2,http://gpu-b:8000#Qwen/Qwen2.5-Coder-7B-Instruct@1"


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

    @property
    def label(self) -> str:
        """What the model is called in operator (bandit arm) names: the model, else host:port."""
        return self.model or (urlsplit(self.url).netloc or self.root)


def model_groups(endpoints: Sequence[Endpoint]) -> dict[str, list[int]]:
    """Endpoint indices by model label, in order of first appearance.

    Endpoints that name the same `#model` are one group (replicas of one model on several
    servers); an endpoint without a model name is a group of its own, labelled host:port.
    """
    groups: dict[str, list[int]] = {}
    for i, endpoint in enumerate(endpoints):
        groups.setdefault(endpoint.label, []).append(i)
    return groups


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


def probe_endpoints(endpoints: Sequence[Endpoint], timeout_s: float = 3.0) -> list[str]:
    """What is wrong with the servers, asked once each (`GET /v1/models`): one sentence per
    problem (down, refusing, not serving the model named), empty when all is well.

    For a warning before a run starts: a server may well come up later, so none of this stops a
    run (the LLM operators wait for their server while the other operators go on). A server that answers
    and does not list the model named is an `EvoError`: it will not serve it later either.
    """
    later = "the run starts anyway, and its LLM operators wait for it while the other operators go on"
    wanted: dict[str, list[str]] = {}
    for endpoint in endpoints:
        models = wanted.setdefault(endpoint.root, [])
        if endpoint.model is not None and endpoint.model not in models:
            models.append(endpoint.model)
    problems: list[str] = []
    wrong: list[str] = []
    with httpx2.Client(timeout=timeout_s, trust_env=False) as http:
        for root, models in wanted.items():
            try:
                response = http.get(f"{root}/v1/models")
            except httpx2.TransportError as exc:
                problems.append(f"the LLM server {root} does not answer ({type(exc).__name__}: {exc or 'no detail'}); "
                                f"{later}")
                continue
            if response.status_code >= 400:
                problems.append(f"the LLM server {root} answers GET /v1/models with HTTP {response.status_code} "
                                f"({server_message(response)}); {later}")
                continue
            try:
                served = model_ids(response.json())
            except (ValueError, AttributeError):
                problems.append(f"the LLM server {root} answers GET /v1/models with something that is not an "
                                f"OpenAI model list: is it an OpenAI-compatible server? {later}")
                continue
            for model in models:
                if served and model not in served:
                    wrong.append(f"the LLM server {root} does not serve the model {model!r} (it lists "
                                 f"{', '.join(served)}): mend the '#model' part of --llm")
    if wrong:  # the server said so itself: every call would be refused, so no run is started for it
        raise EvoError("; ".join(wrong))
    return problems


def model_ids(body: Mapping[str, Any]) -> list[str]:
    """The model names in the JSON body of a server's `GET /v1/models` (an OpenAI model list)."""
    return [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and "id" in m]


def server_message(response: httpx2.Response) -> str:
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


class Roster:
    """The endpoints of a registry that changes under a running search, by key (a replica's name).

    `read()` (blocking; it may raise) returns the endpoints that serve now, by key. `refresh` reads
    it and merges: a key whose URL changed is *replaced* (its new URL, the weight it had: one log
    line says so), a new key is added with its weight, a key no longer listed is dropped. A read
    that fails or lists nothing keeps the last endpoints (a client needs one to fail over to, and
    its outage pause waits for them to come back). `kick` starts a refresh in a worker thread when
    one is due: every `refresh_s` seconds, or `retry_s` after `stale` (an endpoint failed a
    request). `version` grows with every change, for the client to pick the new list up.
    `initial`: the first endpoints, when the caller has read them already (else `read()` now).
    """

    def __init__(self, read: Callable[[], Mapping[str, Endpoint]], *, what: str, refresh_s: float = 30.0,
                 retry_s: float = 2.0, initial: Mapping[str, Endpoint] | None = None) -> None:
        if not (refresh_s > 0 and retry_s >= 0):
            raise EvoError(f"the endpoints of {what} are re-read every refresh_s > 0 seconds (got {refresh_s}) "
                           f"and retry_s >= 0 after a failure (got {retry_s})")
        self.read, self.what, self.refresh_s, self.retry_s = read, what, refresh_s, retry_s
        self._current = dict(read() if initial is None else initial)
        if not self._current:
            raise EvoError(f"{what} lists no LLM endpoint that answers now")
        self._seen = dict(self._current)  # every key's last endpoint: its weight is kept when it comes back
        self.version = 0
        self._last = time.monotonic()
        self._due = self._last + refresh_s
        self._thread: threading.Thread | None = None
        self._failing = False  # the last read failed or listed nothing (said once, not at every read)
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints now, in the order their keys were first seen."""
        with self._lock:
            return list(self._current.values())

    def stale(self) -> None:
        """An endpoint failed: re-read `retry_s` after the last read (it may have moved)."""
        self._due = min(self._due, self._last + self.retry_s)

    def kick(self) -> None:
        """Start a refresh in a worker thread if one is due and none runs."""
        if time.monotonic() >= self._due and (self._thread is None or not self._thread.is_alive()):
            self._due = time.monotonic() + self.refresh_s  # before the thread: one kick, one read
            self._thread = threading.Thread(target=self.refresh, name="evo-llm-roster", daemon=True)
            self._thread.start()

    def refresh(self) -> bool:
        """Read the registry now and merge (see the class); whether the endpoints changed."""
        try:
            found = dict(self.read())
        except Exception as exc:  # noqa: BLE001 - the registry is away for now (a head restarting, a timeout)
            found, why = {}, f"{type(exc).__name__}: {exc}"
        else:
            why = "it lists no endpoint that answers"
        self._last = time.monotonic()
        self._due = self._last + self.refresh_s
        if not found:
            if not self._failing:
                log.warning("could not re-read the LLM endpoints of %s (%s); keeping the last known ones",
                            self.what, str(why).splitlines()[0][:300])
            self._failing = True
            return False
        self._failing = False
        with self._lock:
            merged = merge_endpoints(self._current, found, self._seen, self.what)
            changed = list(merged.items()) != list(self._current.items())
            self._current = merged
            self.version += changed
        return changed


def merge_endpoints(old: Mapping[str, Endpoint], found: Mapping[str, Endpoint], seen: dict[str, Endpoint],
                    what: str) -> dict[str, Endpoint]:
    """`old` updated to `found` (see `Roster`), one log line per change. `seen` (updated here) holds the last
    endpoint of every key ever listed: a key that comes back after a drop keeps its weight and, at a new
    URL, is said to be replaced."""
    merged: dict[str, Endpoint] = {}
    for key, endpoint in old.items():
        if key not in found:
            log.warning("LLM endpoint %s (%s) dropped: %s no longer lists it as serving", key, endpoint.url, what)
    for key in [*(k for k in old if k in found), *(k for k in found if k not in old)]:  # old order, then new
        before = seen.get(key)
        now = found[key] if before is None else replace(found[key], weight=before.weight)
        if before is None:
            log.warning("LLM endpoint %s added: %s (weight %g)", key, now.url, now.weight)
        elif now.url != before.url or now.model != before.model:
            log.warning("LLM endpoint %s replaced: %s -> %s (weight %g kept); requests go to the new URL",
                        key, before.url, now.url, now.weight)
        elif key not in old:
            log.warning("LLM endpoint %s back: %s", key, now.url)
        merged[key] = seen[key] = now
    return merged
