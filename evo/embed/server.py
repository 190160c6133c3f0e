"""Embeddings from a server's `/v1/embeddings` endpoint (the OpenAI embeddings API).

`vllm serve` of an embedding model, a text-embeddings server, or any OpenAI-compatible server
that embeds: `ServerEmbedder("http://127.0.0.1:8001", "BAAI/bge-small-en-v1.5")`, or in a run's
config `embedder = "server:http://127.0.0.1:8001#BAAI/bge-small-en-v1.5"` (the model is read
from `/v1/models` when not given). The dimension is the length of the first vector the server
returns (a short probe when `dim` is read before any `embed`); every later vector must match it.

Texts go in batches of `batch_size` per request; rows come back in the order of the texts (by the
`index` of each reply item) and are L2-normalised here, whatever the server does. An empty text
is not sent: its row is zero, as with the other embedders. A request that fails for a transient
reason (refused, reset, timeout, 408/429/5xx) is retried with exponential backoff; when every
attempt failed, `EmbeddingUnavailable` says which server and why. A rejected request (another
4xx, e.g. a chat model that cannot embed) raises `EvoError` with the server's message at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx2
import numpy as np

from evo.errors import EvoError
from evo.llm.endpoints import server_message

log = logging.getLogger(__name__)

SPEC_EXAMPLE = "server:http://127.0.0.1:8001#BAAI/bge-small-en-v1.5"
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PROBE = "def f(x):\n    return x\n"


class EmbeddingUnavailable(EvoError):
    """The embeddings server did not answer after all the retries."""


class _Transient(Exception):
    pass


def parse_server_spec(spec: str) -> tuple[str, str | None]:
    """`server:URL[#model]` -> (URL, model or None); EvoError with an example when malformed."""
    rest = spec.removeprefix("server:")
    url, _, model = rest.partition("#")
    split = urlsplit(url)
    if not spec.startswith("server:") or split.scheme not in ("http", "https") or not split.hostname:
        raise EvoError(f"bad embedder {spec!r}: expected server:URL[#model] with an http(s) URL, "
                       f"e.g. {SPEC_EXAMPLE}")
    try:
        split.port  # noqa: B018  # raises on a non-numeric port
    except ValueError:
        raise EvoError(f"bad embedder {spec!r}: {url!r} has an invalid port") from None
    return url, model or None


class ServerEmbedder:
    """L2-normalised float32 embeddings from an OpenAI-compatible `/v1/embeddings` endpoint.

    `url` is the server's base URL (with or without `/v1`); `model` the name to ask for (None:
    the first of `/v1/models`). `timeout_s` bounds one request; `retries` more attempts follow a
    transient failure, after `backoff_s`, doubling. The HTTP connection is kept between calls.

    `duplicate_threshold`: the model is not known in advance and a server may compute in bf16,
    whose noise between batches (around 1e-5 in cosine) would let an identical text through a
    stricter threshold; 0.99999 still lets one-literal changes through for MiniLM-like models.
    Set `duplicate_threshold` in the run config for a model that needs another.
    """

    duplicate_threshold = 0.99999

    def __init__(self, url: str, model: str | None = None, *, batch_size: int = 32, timeout_s: float = 60.0,
                 retries: int = 4, backoff_s: float = 1.0):
        if batch_size < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise EvoError("ServerEmbedder needs batch_size >= 1, timeout_s > 0, retries >= 0 and backoff_s >= 0")
        root = url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.url = url
        self.model = model
        self.name = f"server:{url}" + (f"#{model}" if model else "")
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.requests = 0  # HTTP requests that got an answer (for tests and displays)
        self._dim: int | None = None
        self._http: httpx2.Client | None = None

    def __repr__(self) -> str:
        return f"ServerEmbedder({self.name!r})"

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> ServerEmbedder:
        url, model = parse_server_spec(spec)
        return cls(url, model, **kwargs)

    # ----- HTTP -----

    def _client(self) -> httpx2.Client:
        if self._http is None:
            timeout = httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
            self._http = httpx2.Client(timeout=timeout, trust_env=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _once(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = self._client().request(method, self.root + path, json=payload)
        except httpx2.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        if response.status_code in _RETRY_STATUSES:
            raise _Transient(f"HTTP {response.status_code}: {server_message(response)}")
        if response.status_code >= 400:
            raise EvoError(f"the embeddings server {self.root} rejected {method} {path} with HTTP "
                           f"{response.status_code}: {server_message(response)}. Does it serve an embedding model? "
                           f"(embedder {self.name})")
        try:
            body = response.json()
        except ValueError as exc:
            raise _Transient(f"HTTP {response.status_code} with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise _Transient(f"HTTP {response.status_code} with a JSON body that is not an object")
        self.requests += 1
        return body

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        errors = []
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._once(method, path, payload)
            except _Transient as exc:
                errors.append(f"attempt {attempt + 1}: {exc}")
                if attempt < self.retries:
                    log.warning("embeddings server %s: %s; retrying", self.root, exc)
        raise EmbeddingUnavailable(
            f"the embeddings server {self.root} did not answer after {self.retries + 1} attempts:\n  "
            + "\n  ".join(errors) + f"\nIs it running? (embedder {self.name}; e.g. {SPEC_EXAMPLE})")

    def _model_name(self) -> str:
        if self.model is None:
            body = self._request("GET", "/v1/models")
            names = [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and "id" in m]
            if not names:
                raise EvoError(f"{self.root} lists no model at /v1/models: name one, e.g. server:{self.url}#MODEL")
            self.model = names[0]
        return self.model

    # ----- the embedder interface -----

    @property
    def dim(self) -> int:
        """The vectors' length: from the first reply (a one-text probe if nothing was embedded yet)."""
        if self._dim is None:
            self._embed_batch([_PROBE])
        assert self._dim is not None
        return self._dim

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        body = self._request("POST", "/v1/embeddings",
                             {"model": self._model_name(), "input": texts, "encoding_format": "float"})
        items = body.get("data")
        if not isinstance(items, list) or len(items) != len(texts):
            got = len(items) if isinstance(items, list) else "no"
            raise EvoError(f"the embeddings server {self.root} answered {len(texts)} texts with {got} vectors")
        try:
            items = sorted(items, key=lambda item: int(item.get("index", 0)))
            vectors = np.asarray([item["embedding"] for item in items], dtype=np.float64)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EvoError(f"the embeddings server {self.root} sent a reply that is not OpenAI's embeddings "
                           f"format (data[i].embedding as a list of floats; is encoding_format honoured?): {exc}"
                           ) from exc
        if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
            raise EvoError(f"the embeddings server {self.root} sent vectors of shape {vectors.shape} "
                           "or with non-finite values")
        if self._dim is None:
            self._dim = int(vectors.shape[1])
        elif vectors.shape[1] != self._dim:
            raise EvoError(f"the embeddings server {self.root} changed its vectors' length from {self._dim} to "
                           f"{vectors.shape[1]}: was another model loaded? A run keeps one embedding model.")
        return vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text: float32 `(len(texts), dim)`, rows L2-normalised (zero for empty text)."""
        if isinstance(texts, str):
            raise TypeError("ServerEmbedder.embed takes a sequence of texts; wrap one text in a list")
        todo = [i for i, t in enumerate(texts) if t.strip()]
        parts = [self._embed_batch([texts[i] for i in todo[s:s + self.batch_size]])
                 for s in range(0, len(todo), self.batch_size)]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if parts:
            vectors = np.concatenate(parts)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            zero = norms[:, 0] == 0
            if zero.any():  # a zero vector cannot be normalised: leave it zero (it matches nothing)
                norms[zero] = 1.0
            out[todo] = (vectors / norms).astype(np.float32)
        return out

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
