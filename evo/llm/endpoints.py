"""Where the LLM operators' models are served: the `--llm URL[#model][@weight],...` syntax.

An `Endpoint` is one OpenAI-compatible server (its URL, the model to ask for, its share of the
requests); `parse_endpoints` reads the `--llm` syntax; `model_groups` groups the endpoints that
serve one model, the unit the operator bandit chooses among.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2

from evo.errors import EvoError

__all__ = ["SPEC_EXAMPLE", "Endpoint", "model_groups", "parse_endpoints", "probe_endpoints"]

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
    run (the LLM operators wait for their server while the other operators go on).
    """
    later = "the run starts anyway, and its LLM operators wait for it while the other operators go on"
    wanted: dict[str, list[str]] = {}
    for endpoint in endpoints:
        models = wanted.setdefault(endpoint.root, [])
        if endpoint.model is not None and endpoint.model not in models:
            models.append(endpoint.model)
    problems = []
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
                data = response.json().get("data", [])
                served = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
            except (ValueError, AttributeError):
                problems.append(f"the LLM server {root} answers GET /v1/models with something that is not an "
                                f"OpenAI model list: is it an OpenAI-compatible server? {later}")
                continue
            for model in models:
                if served and model not in served:
                    problems.append(f"the LLM server {root} does not serve the model {model!r} (it lists "
                                    f"{', '.join(served)}): mend the '#model' part of --llm, or the calls will "
                                    "be refused")
    return problems


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
