"""The novelty archive: exact k-nearest-neighbour search over program embeddings (faiss).

Vectors are L2-normalised, so inner product is cosine similarity. Novelty of a program is its
mean cosine *distance* (1 - similarity) to its k nearest stored programs; a program whose
nearest neighbour is at least `duplicate_threshold` similar is a near-duplicate (the engine
rejects it before spending an evaluation).

faiss is imported here and nowhere else in evo: GPU workers never import this module.
`IndexFlatIP` is exact and fine to ~100k vectors of 256 floats (~0.1 ms a query at 10k); an
approximate index (HNSW) for 1M programs is a later step behind the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

# One query at a time is the engine's pattern; faiss's OpenMP threads only add contention then
# (measured: 0.27 ms single-threaded vs 0.5-0.7 ms with 2 threads at 10k x 256).
faiss.omp_set_num_threads(1)



class NoveltyArchive:
    """Program ids and their embeddings, searchable by cosine similarity."""

    def __init__(self, dim: int, k: int = 10, duplicate_threshold: float = 0.995):
        if dim < 1 or k < 1:
            raise ValueError(f"NoveltyArchive: dim and k must be >= 1, got dim={dim}, k={k}")
        if not -1.0 <= duplicate_threshold <= 1.0:
            raise ValueError(
                f"NoveltyArchive: duplicate_threshold is a cosine in [-1, 1], not {duplicate_threshold}"
            )
        self.dim = dim
        self.k = k
        self.duplicate_threshold = duplicate_threshold
        self._index = faiss.IndexFlatIP(dim)
        self._ids: list[str] = []  # faiss row i belongs to program _ids[i]

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """Stored ids, in insertion order."""
        return list(self._ids)

    def _rows(self, vectors: np.ndarray) -> np.ndarray:
        """Validate and L2-normalise (zero rows stay zero: similarity 0 to everything)."""
        x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"NoveltyArchive expects vectors of dimension {self.dim}, got shape {np.shape(vectors)}"
            )
        if not np.isfinite(x).all():
            raise ValueError("NoveltyArchive: vectors must be finite")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        np.divide(x, norms, out=x, where=norms > 0)
        return x

    def add(self, program_id: str, vector: np.ndarray) -> None:
        """Store one program's embedding (shape `(dim,)` or `(1, dim)`)."""
        x = self._rows(vector)
        if len(x) != 1:
            raise ValueError(f"NoveltyArchive.add takes one vector; use add_batch for {len(x)}")
        self._index.add(x)
        self._ids.append(program_id)

    def add_batch(self, program_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store many embeddings at once, `vectors` of shape `(len(program_ids), dim)`."""
        x = self._rows(vectors) if len(program_ids) else np.zeros((0, self.dim), np.float32)
        if len(x) != len(program_ids):
            raise ValueError(f"add_batch: {len(program_ids)} ids but {len(x)} vectors")
        if len(x):
            self._index.add(x)
            self._ids.extend(program_ids)

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` most similar stored programs as (id, cosine similarity), best first."""
        k = min(k, len(self._ids))
        if k <= 0:
            return []
        sims, rows = self._index.search(self._rows(vector)[:1], k)
        return [(self._ids[r], float(s)) for s, r in zip(sims[0], rows[0], strict=True) if r >= 0]

    def novelty(self, vector: np.ndarray) -> float:
        """Mean cosine distance to the k nearest stored programs; 1.0 when the archive is empty."""
        near = self.nearest(vector, self.k)
        if not near:
            return 1.0
        return max(0.0, float(np.mean([1.0 - s for _, s in near])))  # clamp float32 rounding

    def is_near_duplicate(self, vector: np.ndarray) -> tuple[bool, str | None, float]:
        """(is a near-duplicate?, nearest id, its similarity); (False, None, 0.0) when empty."""
        near = self.nearest(vector, 1)
        if not near:
            return False, None, 0.0
        pid, sim = near[0]
        return sim >= self.duplicate_threshold, pid, sim

    def assess(self, vector: np.ndarray) -> NoveltyAssessment:
        """Novelty and near-duplicate verdict from one k-NN search (what screening needs)."""
        near = self.nearest(vector, self.k)
        if not near:
            return NoveltyAssessment(1.0, False, None, 0.0)
        pid, sim = near[0]
        novelty = max(0.0, float(np.mean([1.0 - s for _, s in near])))
        return NoveltyAssessment(novelty, sim >= self.duplicate_threshold, pid, sim)


@dataclass(frozen=True)
class NoveltyAssessment:
    novelty: float  # mean cosine distance to the k nearest; 1.0 for the first program
    duplicate: bool
    nearest: str | None
    similarity: float
