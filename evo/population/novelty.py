"""The novelty archive: k-nearest-neighbour search over program embeddings (faiss).

Vectors are L2-normalised, so inner product is cosine similarity. Novelty of a program is its
mean cosine *distance* (1 - similarity) to its k nearest stored programs; a program whose
nearest neighbour is at least `duplicate_threshold` similar is a near-duplicate (the engine
rejects it before spending an evaluation).

Two regimes, switched automatically by size (`IndexConfig`):

- up to `exact_max` vectors: exact search (faiss's flat inner-product scan), the fastest at
  that size (~0.3 ms at 10k x 256) and exactly reproducible;
- above it: an inverted-file index with 8-bit codes (`IndexIVFScalarQuantizer`, inner
  product, spherical k-means cells): a query scans the `nprobe` nearest cells' codes for
  `refine` x k candidates, then re-ranks them by their exact float32 vectors. Training it
  (k-means on a sample) and filling it run in a background thread; until the first one is
  ready, queries stay exact. When the archive has grown `rebuild_growth` times since the last
  training, a new index (more cells) is trained and filled in the background while the current
  one keeps serving; the swap adds only the vectors that arrived meanwhile. Measured at 1M
  n-gram embeddings: 1.0 ms p50, 1.6 ms p99, recall@10 0.83 against exact search (their
  near neighbours tie in the third decimal; raise `nprobe` for recall, at ~0.06 ms per cell).
  Which queries an index answers depends on when a background build finishes, so above
  `exact_max` two runs with one seed may diverge; `background=False` builds in the caller.

Why IVF and not HNSW: faiss's `IndexHNSWFlat.add` costs O(total) per call (it allocates a lock
per stored vector): measured 0.8 ms for one vector at 100k and 75 ms at 1M; a graph cannot be
searched while it is being extended; and on code embeddings (families of near relatives whose
similarities differ in the third decimal) HNSW M=16 reached only 0.82 recall@10 at efSearch 128.
An IVF add is one assignment to a cell (~50-100 us) and its training is a k-means that runs
aside. The figures are in BENCHMARKS.md, "Population and store at scale".

Every vector is also kept here in fixed-size float32 blocks (never moved once written): the
exact search, the re-ranking, the training samples and rebuilds read them, and a background
build reads rows that the main thread has finished writing while it appends new ones.

faiss is imported here and nowhere else in evo: GPU workers never import this module.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import faiss
import numpy as np

# One query at a time is the engine's pattern; faiss's OpenMP threads only add contention then
# (measured: 0.27 ms single-threaded vs 0.5-0.7 ms with 2 threads at 10k x 256).
faiss.omp_set_num_threads(1)

BLOCK_ROWS = 1 << 16  # rows per storage block


@dataclass(frozen=True)
class IndexConfig:
    """How the novelty archive indexes its vectors; every field has a measured default."""

    exact_max: int = 4_096  # up to this many vectors: exact search (0.3 ms a query at 4k; IVF beyond: engine_overhead.py)
    nprobe: int = 16  # IVF cells scanned per query (recall against speed)
    refine: int = 5  # candidates re-ranked exactly: refine x k (at least 50)
    lists_per_sqrt: float = 2.0  # IVF cells = this x sqrt(vectors at training), to a power of 2
    max_lists: int = 8192
    train_per_list: int = 24  # k-means sample: this many vectors per cell
    kmeans_iters: int = 10
    rebuild_growth: float = 2.0  # retrain when the archive has grown this many times
    background: bool = True  # False: build in the calling thread (deterministic; for tests)
    build_threads: int = 1  # OpenMP threads of the builder (the engine's loop keeps the other cores)

    def __post_init__(self) -> None:
        if self.exact_max < 1 or self.nprobe < 1 or self.max_lists < 1 or self.train_per_list < 1:
            raise ValueError(f"IndexConfig: exact_max, nprobe, max_lists, train_per_list must be >= 1: {self}")
        if self.rebuild_growth <= 1.0:
            raise ValueError(f"IndexConfig: rebuild_growth must be > 1, got {self.rebuild_growth}")

    def lists_for(self, n: int) -> int:
        """IVF cells for an index trained on `n` vectors: a power of 2 near lists_per_sqrt * sqrt(n)."""
        target = self.lists_per_sqrt * math.sqrt(n)
        return int(min(self.max_lists, max(16, 2 ** round(math.log2(max(target, 1.0))))))


class _Rows:
    """Append-only float32 matrix in fixed blocks: a written row never moves."""

    def __init__(self, dim: int):
        self.dim = dim
        self.blocks: list[np.ndarray] = []
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        done = 0
        while done < len(x):
            if self.n == len(self.blocks) * BLOCK_ROWS:
                self.blocks.append(np.empty((BLOCK_ROWS, self.dim), dtype=np.float32))
            b, r = divmod(self.n, BLOCK_ROWS)
            take = min(len(x) - done, BLOCK_ROWS - r)
            self.blocks[b][r : r + take] = x[done : done + take]
            done += take
            self.n += take

    def spans(self, start: int, stop: int, blocks: list[np.ndarray] | None = None) -> list[tuple[int, np.ndarray]]:
        """(first row, contiguous view) pieces covering rows [start, stop)."""
        blocks = self.blocks if blocks is None else blocks
        out = []
        row = start
        while row < stop:
            b, r = divmod(row, BLOCK_ROWS)
            take = min(stop - row, BLOCK_ROWS - r)
            out.append((row, blocks[b][r : r + take]))
            row += take
        return out

    def take(self, rows: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
        """The given rows, gathered (a copy)."""
        if len(blocks) == 1:
            return blocks[0][rows]
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        b, r = np.divmod(rows, BLOCK_ROWS)
        for block in np.unique(b):
            sel = b == block
            out[sel] = blocks[block][r[sel]]
        return out


class NoveltyArchive:
    """Program ids and their embeddings, searchable by cosine similarity."""

    def __init__(
        self, dim: int, k: int = 10, duplicate_threshold: float = 0.995, index: IndexConfig | None = None
    ):
        if dim < 1 or k < 1:
            raise ValueError(f"NoveltyArchive: dim and k must be >= 1, got dim={dim}, k={k}")
        if not -1.0 <= duplicate_threshold <= 1.0:
            raise ValueError(
                f"NoveltyArchive: duplicate_threshold is a cosine in [-1, 1], not {duplicate_threshold}"
            )
        self.dim = dim
        self.k = k
        self.duplicate_threshold = duplicate_threshold
        self.config = index or IndexConfig()
        self._rows = _Rows(dim)
        self._ids: list[str] = []  # row i belongs to program _ids[i]
        self._ivf: faiss.IndexIVFScalarQuantizer | None = None  # holds every row once it exists
        self._trained_on = 0  # rows the serving index was trained on
        self._build: Future[tuple[faiss.IndexIVFScalarQuantizer, int, int]] | None = None
        self._lock = threading.Lock()  # the builder and the swap agree on `_rows.n` through it

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """Stored ids, in insertion order."""
        return list(self._ids)

    @property
    def kind(self) -> str:
        """What answers queries now: 'exact' or 'ivf<cells>'."""
        self._poll()
        return "exact" if self._ivf is None else f"ivf{self._ivf.nlist}"

    @property
    def building(self) -> bool:
        return self._build is not None and not self._build.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until no background build is left (each finished one swapped in)."""
        while self._build is not None:
            self._build.result(timeout)
            self._poll()

    def _normalised(self, vectors: np.ndarray) -> np.ndarray:
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

    # -- adding ---------------------------------------------------------------------------
    def add(self, program_id: str, vector: np.ndarray) -> None:
        """Store one program's embedding (shape `(dim,)` or `(1, dim)`)."""
        x = self._normalised(vector)
        if len(x) != 1:
            raise ValueError(f"NoveltyArchive.add takes one vector; use add_batch for {len(x)}")
        self._append([program_id], x)

    def add_batch(self, program_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store many embeddings at once, `vectors` of shape `(len(program_ids), dim)`."""
        x = self._normalised(vectors) if len(program_ids) else np.zeros((0, self.dim), np.float32)
        if len(x) != len(program_ids):
            raise ValueError(f"add_batch: {len(program_ids)} ids but {len(x)} vectors")
        if len(x):
            self._append(list(program_ids), x)

    def _append(self, ids: list[str], x: np.ndarray) -> None:
        self._poll()
        with self._lock:
            self._rows.append(x)
            self._ids.extend(ids)
            if self._ivf is not None:
                self._ivf.add(x)
        self._maybe_build()

    # -- building (possibly in the background) -------------------------------------------
    def _maybe_build(self) -> None:
        n = len(self._ids)
        if self._build is not None or n <= self.config.exact_max:
            return
        if self._ivf is not None and n < self.config.rebuild_growth * self._trained_on:
            return
        blocks = list(self._rows.blocks)  # the builder's own list: appends here never touch it
        if self.config.background:
            self._build = Future()
            threading.Thread(target=self._run_build, args=(self._build, n, blocks), daemon=True,
                             name="novelty-index").start()
        else:
            self._swap(*_build_ivf(self._rows, blocks, n, self.config, self._lock, catch_up=False))

    def _run_build(self, future: Future, n: int, blocks: list[np.ndarray]) -> None:
        try:
            future.set_result(_build_ivf(self._rows, blocks, n, self.config, self._lock, catch_up=True))
        except BaseException as e:  # surfaced in the main thread by _poll
            future.set_exception(e)

    def _poll(self) -> None:
        """Swap in a finished background build (adding the rows that arrived meanwhile)."""
        if self._build is None or not self._build.done():
            return
        future, self._build = self._build, None
        self._swap(*future.result())
        self._maybe_build()

    def _swap(self, ivf: faiss.IndexIVFScalarQuantizer, trained_on: int, covered: int) -> None:
        with self._lock:
            for _, piece in self._rows.spans(covered, self._rows.n):
                ivf.add(piece)
            self._ivf, self._trained_on = ivf, trained_on

    # -- searching ------------------------------------------------------------------------
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._poll()
        if self._ivf is not None:
            _, found = self._ivf.search(q, min(max(self.config.refine * k, 50), len(self._ids)))
            rows = found[0][found[0] >= 0]
            sims = self._rows.take(rows, self._rows.blocks) @ q[0]
            top = np.argsort(-sims, kind="stable")[:k]
            return sims[top], rows[top]
        found = [faiss.knn(q, piece, min(k, len(piece)), faiss.METRIC_INNER_PRODUCT)
                 for _, piece in self._rows.spans(0, self._rows.n)]
        if len(found) == 1:
            return found[0][0][0], found[0][1][0]
        # Several blocks (only while the first index is being built): merge their top-k.
        starts = [s for s, _ in self._rows.spans(0, self._rows.n)]
        sims = np.concatenate([d[0] for d, _ in found])
        rows = np.concatenate([i[0] + s for (_, i), s in zip(found, starts, strict=True)])
        top = np.argsort(-sims, kind="stable")[:k]
        return sims[top], rows[top]

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` most similar stored programs as (id, cosine similarity), best first."""
        k = min(k, len(self._ids))
        if k <= 0:
            return []
        sims, rows = self._search(self._normalised(vector)[:1], k)
        return [(self._ids[r], float(s)) for s, r in zip(sims, rows, strict=True) if r >= 0]

    def exact_nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Like `nearest` but always by exact scan of every vector (slow at scale: for checks)."""
        k = min(k, len(self._ids))
        if k <= 0:
            return []
        q = self._normalised(vector)[:1]
        sims, rows = [], []
        for start, piece in self._rows.spans(0, self._rows.n):
            d, i = faiss.knn(q, piece, min(k, len(piece)), faiss.METRIC_INNER_PRODUCT)
            sims.append(d[0])
            rows.append(i[0] + start)
        s, r = np.concatenate(sims), np.concatenate(rows)
        top = np.argsort(-s, kind="stable")[:k]
        return [(self._ids[i], float(v)) for v, i in zip(s[top], r[top], strict=True)]

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


def _build_ivf(
    rows: _Rows, blocks: list[np.ndarray], n: int, config: IndexConfig, lock: threading.Lock, catch_up: bool
) -> tuple[faiss.IndexIVFScalarQuantizer, int, int]:
    """Train an IVF index on a sample of rows [0, n) and fill it; returns (index, n, rows covered).

    With `catch_up` (a background build) it also adds, in rounds, the rows appended meanwhile,
    until few are left, so that the swap in the main thread stays short.
    """
    faiss.omp_set_num_threads(config.build_threads)  # per thread: this builder's own setting
    nlist = config.lists_for(n)
    rng = np.random.default_rng(n)  # seeded by the size: the same rows give the same index
    sample = np.sort(rng.choice(n, size=min(n, config.train_per_list * nlist), replace=False))
    quantizer = faiss.IndexFlatIP(rows.dim)
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, rows.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    ivf.cp.niter = config.kmeans_iters
    ivf.cp.spherical = True
    ivf.cp.min_points_per_centroid = 1  # a small sample per cell is deliberate: no warning
    ivf.train(rows.take(sample, blocks))
    ivf.nprobe = config.nprobe
    for _, piece in rows.spans(0, n, blocks):
        ivf.add(piece)
    covered = n
    while catch_up:
        with lock:
            blocks = list(rows.blocks)
            available = rows.n
        if available - covered <= 1024:
            break
        for _, piece in rows.spans(covered, available, blocks):
            ivf.add(piece)
        covered = available
    return ivf, n, covered


@dataclass(frozen=True)
class NoveltyAssessment:
    novelty: float  # mean cosine distance to the k nearest; 1.0 for the first program
    duplicate: bool
    nearest: str | None
    similarity: float
