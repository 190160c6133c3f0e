"""The novelty archive: k-nearest-neighbour search over program embeddings (faiss).

Vectors are L2-normalised, so inner product is cosine similarity. Novelty of a program is its
mean cosine *distance* (1 - similarity) to its k nearest stored programs; a program whose
nearest neighbour is at least `duplicate_threshold` similar is a near-duplicate (the engine
rejects it before spending an evaluation).

Two regimes, switched automatically by size (`IndexConfig`):

- up to `exact_max` vectors: exact search (faiss's flat inner-product scan), the fastest at
  that size (~0.3 ms at 10k x 256) and exactly reproducible;
- above it: an inverted file with 4-bit product-quantisation codes scanned by faiss's SIMD
  "fast-scan" kernels (`IndexIVFPQFastScan`, inner product), over a reduced space, then an exact
  re-rank. The reduced space: the top `scan_dim` (160) directions of a sample (eigenvectors of its
  uncentred second moment, which keeps inner products), turned by a random rotation so that each
  2-dimension sub-quantiser gets a similar share of the variance; the cells: spherical k-means,
  `lists_per_sqrt` x sqrt(N) of them; the codes: of each vector's residual from its cell's
  centroid (40 bytes at 160 dimensions). A query is projected, scans the codes of its
  `probe_per_sqrt` x sqrt(cells) nearest cells, keeps the best `rerank` candidates by their codes
  and re-ranks those by their exact float32 vectors (faiss's by-index inner products, read in
  place from the blocks below). Training (projection, k-means and quantiser on a sample) and
  filling run in a background thread; until the first index is ready, queries stay exact. When
  the archive has grown `rebuild_growth` times since the last training, a new index is trained
  and filled in the background while the current one keeps serving; the builder then adds the
  rows that arrived meanwhile and swaps the new index in under the lock (an add may wait for
  that, a few ms). If the archive grew `rebuild_growth` times again while it built (a bulk load:
  resume, seeding), the builder goes straight on with a larger index, so a resume does not wait
  for the engine's next call to start the last build. Measured on 1M n-gram embeddings
  (benchmarks/population_scale.py, one core of a shared 2-core VM): recall@10 0.97 against exact
  search (0.96 on a wider query set) at 1.0-1.3 ms p50 / 1.5-2.0 ms p99 a query; 0.98-0.99 at
  10k and 100k (BENCHMARKS.md, "The novelty index, and the recall it missed"). Recall and time
  rise with `probe_per_sqrt` (~0.1 ms per 16 more cells at 1M) and `rerank`.
  Which queries an index answers depends on when a background build finishes, so above
  `exact_max` two runs with one seed may diverge; `background=False` builds in the caller.

Why the scan is wide and its codes small: on these embeddings (families of near relatives whose
similarities differ in the third decimal) a query's 10 nearest are spread over many k-means
cells: the nearest cells hold 0.97 of them only once ~15% of the vectors are read at 1M, whatever
the number of cells (more cells, two partitions, or assigning boundary vectors to two cells did
not change that). So a query reads ~160k codes, which must be small and fast to scan; their
coarse ranking is then repaired by a generous exact re-rank.

Why IVF and not HNSW: faiss's `IndexHNSWFlat.add` costs O(total) per call (it allocates a lock
per stored vector): measured 0.8 ms for one vector at 100k and 75 ms at 1M; a graph cannot be
searched while it is being extended, nor rebuilt within a resume (128 s at 1M on 2 threads); and
on these embeddings HNSW M=16 reached only 0.82 recall@10 at efSearch 128. An IVF add is one
projection, one cell assignment and one code (~0.1 ms at 1M), and its training runs aside.

Every vector is also kept here in float32 blocks of doubling size (never moved once written):
the exact search, the re-ranking, the training samples and rebuilds read them, and a background
build reads rows that the main thread has finished writing while it appends new ones.

faiss is imported here and nowhere else in evo: GPU workers never import this module.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import faiss
import numpy as np

# One query at a time is the engine's pattern; faiss's OpenMP threads only add contention then
# (measured: 0.27 ms single-threaded vs 0.5-0.7 ms with 2 threads at 10k x 256; the IVF scan at
# 1M was no faster on 2 threads of this shared machine either).
faiss.omp_set_num_threads(1)

BLOCK_ROWS = 1 << 18  # rows of the first storage block; block b holds BLOCK_ROWS << b rows
MIN_INDEXED = 1_000  # exact search at least up to this size, whatever exact_max (the codes need a sample)


@dataclass(frozen=True)
class IndexConfig:
    """How the novelty archive indexes its vectors; every field has a measured default."""

    exact_max: int = 4_096  # up to this many vectors: exact search (0.3 ms a query at 4k; IVF beyond: engine_overhead.py)
    scan_dim: int = 160  # dimensions kept for the scan stage (PCA); codes: scan_dim / 2 sub-quantisers of 4 bits
    lists_per_sqrt: float = 1.0  # IVF cells = this x sqrt(vectors at training), to a power of 2
    max_lists: int = 8192
    probe_per_sqrt: float = 3.5  # cells scanned per query = this x sqrt(cells): 40 / 56 / 112 at 10k / 100k / 1M
    rerank: int = 500  # candidates re-ranked by their exact vectors: at most this, N / 50 at small N, >= 10 x k
    train_per_list: int = 24  # k-means sample: this many vectors per cell (the PCA and codes: at least 16,384)
    kmeans_iters: int = 10
    rebuild_growth: float = 2.0  # retrain when the archive has grown this many times
    background: bool = True  # False: build in the calling thread (deterministic; for tests)
    build_threads: int = 1  # OpenMP threads of the builder (the engine's loop keeps the other cores)

    def __post_init__(self) -> None:
        if min(self.exact_max, self.scan_dim, self.max_lists, self.rerank, self.train_per_list) < 1:
            raise ValueError(
                f"IndexConfig: exact_max, scan_dim, max_lists, rerank, train_per_list must be >= 1: {self}"
            )
        if self.probe_per_sqrt <= 0 or self.lists_per_sqrt <= 0:
            raise ValueError(f"IndexConfig: probe_per_sqrt and lists_per_sqrt must be > 0: {self}")
        if self.rebuild_growth <= 1.0:
            raise ValueError(f"IndexConfig: rebuild_growth must be > 1, got {self.rebuild_growth}")

    def lists_for(self, n: int) -> int:
        """IVF cells for an index trained on `n` vectors: a power of 2 near lists_per_sqrt * sqrt(n)."""
        target = self.lists_per_sqrt * math.sqrt(n)
        return int(min(self.max_lists, max(16, 2 ** round(math.log2(max(target, 1.0))))))

    def nprobe_for(self, nlist: int) -> int:
        """Cells to scan in an index of `nlist` cells."""
        return max(1, min(nlist, math.ceil(self.probe_per_sqrt * math.sqrt(nlist))))

    def candidates_for(self, k: int, n: int) -> int:
        """Candidates to re-rank exactly for a k-NN query among `n` vectors."""
        return min(n, max(10 * k, min(self.rerank, n // 50)))


def _block_start(b: int) -> int:
    return BLOCK_ROWS * ((1 << b) - 1)


def _block_of(rows: np.ndarray) -> np.ndarray:
    """Block of each row: b such that _block_start(b) <= row < _block_start(b + 1)."""
    return np.frexp((rows // BLOCK_ROWS + 1).astype(np.float64))[1] - 1


class _Rows:
    """Append-only float32 matrix in blocks of doubling size: a written row never moves.

    A block is allocated (not touched) when the first row reaches it; its pages become resident
    as rows are written, so a large last block costs only what it holds.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.blocks: list[np.ndarray] = []
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        done = 0
        while done < len(x):
            b = len(self.blocks)
            if self.n == _block_start(b):
                self.blocks.append(np.empty((BLOCK_ROWS << b, self.dim), dtype=np.float32))
            b = len(self.blocks) - 1
            r = self.n - _block_start(b)
            take = min(len(x) - done, len(self.blocks[b]) - r)
            self.blocks[b][r : r + take] = x[done : done + take]
            done += take
            self.n += take

    def spans(self, start: int, stop: int, blocks: list[np.ndarray] | None = None) -> list[tuple[int, np.ndarray]]:
        """(first row, contiguous view) pieces covering rows [start, stop)."""
        blocks = self.blocks if blocks is None else blocks
        out = []
        row = start
        while row < stop:
            b = int(_block_of(np.array([row]))[0])
            r = row - _block_start(b)
            take = min(stop - row, len(blocks[b]) - r)
            out.append((row, blocks[b][r : r + take]))
            row += take
        return out

    def take(self, rows: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
        """The given rows, gathered (a copy)."""
        if len(blocks) == 1:
            return blocks[0][rows]
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        b = _block_of(rows)
        for block in np.unique(b).tolist():
            sel = b == block
            out[sel] = blocks[block][rows[sel] - _block_start(block)]
        return out

    def dots(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of `q` (dim,) with the given rows, read in place (faiss, no gather)."""
        sims = np.empty(len(rows), dtype=np.float32)
        if len(self.blocks) == 1:
            _dots(sims, q, self.blocks[0], np.ascontiguousarray(rows, dtype=np.int64))
            return sims
        b = _block_of(rows)
        for block in np.unique(b).tolist():
            sel = b == block
            part = np.empty(int(sel.sum()), dtype=np.float32)
            _dots(part, q, self.blocks[block], rows[sel] - _block_start(block))
            sims[sel] = part
        return sims


def _dots(out: np.ndarray, q: np.ndarray, block: np.ndarray, local: np.ndarray) -> None:
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(block),
                                     faiss.swig_ptr(local), block.shape[1], 1, len(local))


class _Index:
    """A trained IVF over projected vectors: `proj` (dim x scan dims) then `ivf` (codes only)."""

    def __init__(self, proj: np.ndarray, ivf: faiss.IndexIVFPQFastScan, trained_on: int):
        self.proj = proj
        self.ivf = ivf
        self.trained_on = trained_on

    def add(self, x: np.ndarray) -> None:
        self.ivf.add(x @ self.proj)

    @property
    def kind(self) -> str:
        return f"ivf{self.ivf.nlist},pca{self.proj.shape[1]},pq{self.ivf.M}x4fs"


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
        self._index: _Index | None = None  # holds every row once it exists; replaced under _lock
        self._build: Future[None] | None = None
        self._lock = threading.Lock()  # the builder and the appends agree on `_rows.n` and `_index` through it

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """Stored ids, in insertion order."""
        return list(self._ids)

    @property
    def kind(self) -> str:
        """What answers queries now: 'exact' or 'ivf<cells>,pca<dims>,pq<M>x4fs'."""
        self._poll()
        index = self._index
        return "exact" if index is None else index.kind

    @property
    def building(self) -> bool:
        return self._build is not None and not self._build.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until no background build is left (the builder swaps each one in as it finishes)."""
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
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))  # float64: no overflow
        if not np.isfinite(norms).all():  # a NaN or an infinity anywhere in a row makes its norm one
            raise ValueError("NoveltyArchive: vectors must be finite")
        norms[norms == 0] = 1.0
        x /= norms.astype(np.float32)[:, None]
        return x

    # -- adding ---------------------------------------------------------------------------
    def add(self, program_id: str, vector: np.ndarray) -> None:
        """Store one program's embedding (shape `(dim,)` or `(1, dim)`)."""
        x = self._normalised(vector)
        if len(x) != 1:
            raise ValueError(f"NoveltyArchive.add takes one vector; use add_batch for {len(x)}")
        self._append([program_id], x)

    def add_assessed(self, program_id: str, seen: NoveltyAssessment) -> None:
        """`add(program_id, vector)` for the vector `assess` was given: normalised once, not twice."""
        if seen.vector is None or len(seen.vector) != 1:
            raise ValueError("add_assessed takes the assessment of one vector made by NoveltyArchive.assess")
        self._append([program_id], seen.vector)

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
            if self._index is not None:
                self._index.add(x)
        self._maybe_build()

    # -- building (possibly in the background) -------------------------------------------
    def _maybe_build(self) -> None:
        n = len(self._ids)
        if self._build is not None or n <= max(self.config.exact_max, MIN_INDEXED):
            return
        if self._index is not None and n < self.config.rebuild_growth * self._index.trained_on:
            return
        if self.config.background:
            self._build = Future()
            threading.Thread(target=self._run_builds, args=(self._build,), daemon=True, name="novelty-index").start()
        else:
            index, covered = _build_index(self._rows, list(self._rows.blocks), n, self.config, self._lock, catch_up=False)
            self._publish(index, covered)

    def _run_builds(self, future: Future) -> None:
        """The builder thread: build, swap in, and build again while the archive outgrows it."""
        try:
            faiss.omp_set_num_threads(self.config.build_threads)  # per thread: this builder's own setting
            while True:
                with self._lock:
                    n, blocks = self._rows.n, list(self._rows.blocks)  # the builder's own list
                index, covered = _build_index(self._rows, blocks, n, self.config, self._lock, catch_up=True)
                if self._publish(index, covered) < self.config.rebuild_growth * n:
                    break
            future.set_result(None)
        except BaseException as e:  # surfaced in the main thread by _poll
            future.set_exception(e)

    def _publish(self, index: _Index, covered: int) -> int:
        """Add the rows that arrived since `covered` and make `index` the serving one; returns the rows."""
        with self._lock:
            for _, piece in self._rows.spans(covered, self._rows.n):
                index.add(piece)
            self._index = index
            return self._rows.n

    def _poll(self) -> None:
        """Surface a finished background build's outcome, and start the next one if due."""
        if self._build is None or not self._build.done():
            return
        future, self._build = self._build, None
        future.result()
        self._maybe_build()

    # -- searching ------------------------------------------------------------------------
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._poll()
        index = self._index  # one reference: the builder may swap in another meanwhile
        if index is not None:
            n = index.ivf.ntotal
            _, found = index.ivf.search(q @ index.proj, self.config.candidates_for(k, n))
            rows = found[0][found[0] >= 0]
            sims = self._rows.dots(q[0], rows)
            top = np.argpartition(-sims, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
            top = top[np.argsort(-sims[top], kind="stable")]
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

    def _nearest(self, x: np.ndarray, k: int) -> tuple[np.ndarray, list[int]]:
        """Similarities (float32) and rows of the `k` nearest to the normalised `x`, best first; rows of no
        vector left out."""
        k = min(k, len(self._ids))
        if k <= 0:
            return np.zeros(0, np.float32), []
        sims, rows = self._search(x[:1], k)
        if rows.size and rows.min() < 0:
            keep = rows >= 0
            sims, rows = sims[keep], rows[keep]
        return sims, rows.tolist()

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` most similar stored programs as (id, cosine similarity), best first."""
        sims, rows = self._nearest(self._normalised(vector), k)
        ids = self._ids
        return [(ids[r], s) for s, r in zip(sims.tolist(), rows, strict=True)]

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
        x = self._normalised(vector)
        sims, rows = self._nearest(x, self.k)
        if not rows:
            return NoveltyAssessment(1.0, False, None, 0.0, x)
        sim = float(sims[0])
        # The mean as `novelty` takes it (numpy's pairwise sum of the float64 distances), without the list.
        novelty = max(0.0, float(np.mean(1.0 - sims.astype(np.float64))))
        return NoveltyAssessment(novelty, sim >= self.duplicate_threshold, self._ids[rows[0]], sim, x)


def _projection(sample: np.ndarray, dims: int, rng: np.random.Generator) -> np.ndarray:
    """(dim x dims) float32: the top `dims` eigenvectors of the sample's uncentred second moment
    (what keeps inner products best), turned by a random rotation (spreads the variance evenly
    over the product quantiser's sub-spaces)."""
    moment = sample.T.astype(np.float64) @ sample.astype(np.float64)
    _, vecs = np.linalg.eigh(moment)  # ascending
    top = vecs[:, ::-1][:, :dims]
    rotation, _ = np.linalg.qr(rng.standard_normal((dims, dims)))
    return np.ascontiguousarray((top @ rotation).astype(np.float32))


def _build_index(
    rows: _Rows, blocks: list[np.ndarray], n: int, config: IndexConfig, lock: threading.Lock, catch_up: bool
) -> tuple[_Index, int]:
    """Train an index on a sample of rows [0, n) and fill it; returns (index, rows covered).

    With `catch_up` (a background build) it also adds, in rounds, the rows appended meanwhile,
    until few are left, so that the swap under the lock stays short.
    """
    nlist = config.lists_for(n)
    rng = np.random.default_rng(n)  # seeded by the size: the same rows give the same index
    size = min(n, max(config.train_per_list * nlist, 16_384))
    sample = rows.take(np.sort(rng.choice(n, size=size, replace=False)), blocks)
    dims = min(config.scan_dim, rows.dim)
    if dims > 1 and dims % 2:
        dims -= 1  # sub-quantisers of 2 dimensions
    proj = _projection(sample, dims, rng)
    ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dims), dims, nlist, max(1, dims // 2), 4,
                                   faiss.METRIC_INNER_PRODUCT)
    ivf.by_residual = True  # codes of (vector - its cell's centroid): finer for the same bytes
    ivf.cp.niter = config.kmeans_iters
    ivf.cp.spherical = True
    ivf.cp.min_points_per_centroid = 1  # a small sample per cell is deliberate: no warning
    ivf.nprobe = config.nprobe_for(nlist)
    ivf.implem = 11  # one query at a time, candidates kept in a reservoir: ~7% faster than auto at k = 500
    ivf.train(sample @ proj)  # the cells (k-means) and the codes (product quantiser)
    index = _Index(proj, ivf, n)
    for _, piece in rows.spans(0, n, blocks):
        index.add(piece)
    covered = n
    while catch_up:
        with lock:
            blocks = list(rows.blocks)
            available = rows.n
        if available - covered <= 1024:
            break
        for _, piece in rows.spans(covered, available, blocks):
            index.add(piece)
        covered = available
    return index, covered


@dataclass(frozen=True)
class NoveltyAssessment:
    novelty: float  # mean cosine distance to the k nearest; 1.0 for the first program
    duplicate: bool
    nearest: str | None
    similarity: float
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)  # the query, normalised (1, dim)
