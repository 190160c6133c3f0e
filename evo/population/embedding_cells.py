"""Cells defined by code embeddings, for tasks whose behaviour has no natural descriptors.

`EmbeddingCellSpace.fit` takes the embeddings of the seeds (and a few of their mutants), fits a
PCA to a few dimensions, boxes the projected points (with a margin, so that later programs
that move away from the seeds still land inside) and lays CVT centroids over that box by
k-means on uniform samples (seeded). The space is then frozen: it is stored with the run
(`to_dict`) and restored on resume (`from_dict`), so every program keeps its cell. Use it as

    space = EmbeddingCellSpace.fit(embedder.embed(seed_texts))
    cells = CVTCells(space.centroids)
    cells.add(program_id, score, space.project(embedding[None])[0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ribs.archives import k_means_centroids
from sklearn.decomposition import PCA

from evo.errors import EvoError

MARGIN = 0.5  # the box grows by this fraction of its span on each side
# Uniform samples for k-means: ~40 per cell (pyribs' default, 100k, takes 10 s for 512 cells).
KMEANS_SAMPLES_PER_CELL = 40


@dataclass(frozen=True, eq=False)  # arrays: compare with to_dict()
class EmbeddingCellSpace:
    """A frozen linear projection of embeddings to `n_dims` and CVT centroids in that space."""

    mean: np.ndarray  # (dim,) the embeddings' mean
    components: np.ndarray  # (n_dims, dim) PCA axes
    low: np.ndarray  # (n_dims,) the box the centroids cover
    high: np.ndarray
    centroids: np.ndarray  # (n_cells, n_dims)

    @property
    def n_dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, n_dims: int = 2, n_cells: int = 64, seed: int = 0
    ) -> EmbeddingCellSpace:
        """Fit the projection and the centroids on a few embeddings (seeds and some mutants).

        With few samples the projection gets fewer dimensions: at most (distinct samples - 1).
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2:
            raise EvoError(f"embedding cells: expected a (samples, dim) array, got shape {x.shape}")
        distinct = len(np.unique(x, axis=0))
        if distinct < 2:
            raise EvoError(
                f"embedding cells need at least 2 distinct programs to fit, got {distinct}: "
                "add seeds or mutate the seed a few times before fitting, or declare descriptors in task.toml"
            )
        if n_dims < 1 or n_cells < 1:
            raise EvoError(f"embedding cells: n_dims and n_cells must be >= 1, got {n_dims} and {n_cells}")
        n_dims = min(n_dims, distinct - 1, x.shape[1])
        pca = PCA(n_components=n_dims, svd_solver="full").fit(x)
        projected = (x - pca.mean_) @ pca.components_.T
        lo, hi = projected.min(axis=0), projected.max(axis=0)
        span = np.maximum(hi - lo, 1e-6)  # a degenerate axis still gets a box
        lo, hi = lo - MARGIN * span, hi + MARGIN * span
        centroids, _ = k_means_centroids(
            centroids=n_cells,
            ranges=list(zip(lo.tolist(), hi.tolist(), strict=True)),
            samples=min(max(KMEANS_SAMPLES_PER_CELL * n_cells, 5000), 100_000),
            seed=seed,
        )
        return cls(pca.mean_.copy(), pca.components_.copy(), lo, hi, np.asarray(centroids, dtype=np.float64))

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Coordinates `(n, n_dims)` of embeddings `(n, dim)` in the frozen space (the descriptors)."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"project expects embeddings of shape (n, {self.mean.shape[0]}), got {x.shape}; "
                "was the space fitted with another embedder?"
            )
        return (x - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; floats survive a JSON round trip exactly."""
        return {
            "version": 1,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "centroids": self.centroids.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingCellSpace:
        if data.get("version") != 1:
            raise EvoError(f"embedding cells: unknown stored format version {data.get('version')!r}")
        arrays = [
            np.asarray(data[k], dtype=np.float64) for k in ("mean", "components", "low", "high", "centroids")
        ]
        return cls(*arrays)
