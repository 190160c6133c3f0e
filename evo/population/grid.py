"""MAP-Elites cells: a thin layer over pyribs archives that speaks program ids.

A `Cells` keeps one elite per cell of a behaviour space. The pyribs archive stores, per filled
cell, the elite's score (ribs' objective), its measures (clipped into range), its descriptors
as given (an extra field) and, as the ribs "solution", the admission number of that elite (one
float); the program id of each cell's elite lives here in a plain list indexed by the ribs cell
index.

The protocol: `decide` says what `add` would do without changing anything; `add` applies it.
A program replaces a cell's incumbent only if its score is strictly higher, so replaying the
same sequence of `add` calls rebuilds the same cells.

Speed (the project scales to 1M programs, and a resume replays every admission): the cell index
is computed here in plain Python (ribs' own `index_of` formula, ~6x cheaper per call than
ribs' validated path), and admitted programs reach ribs through its batch `add`, the fast path,
in batches of up to `FLUSH_EVERY`, flushed before anyone reads `archive` or `table()`. A
single `add_single` costs ~160 us; the batch ~1 us per program. Best, top-k, coverage, QD score
and sampling are kept incrementally here, never by a scan of all elites.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from ribs.archives import CVTArchive, GridArchive

from evo.task import DescriptorSpec

NEW, IMPROVE, REJECTED = "new", "improve", "rejected"
RECENT = 64  # how many recent admissions `recent()` remembers
FLUSH_EVERY = 256  # admitted programs buffered before one ribs batch add
_BRUTE_FORCE_MAX = 4096  # CVT: below this many centroids, a numpy scan beats ribs' k-d tree


class Admission(NamedTuple):
    """What adding a program to the cells does (or did). Immutable; a named tuple because a
    resume builds one per replayed evaluation (3x cheaper than a frozen dataclass)."""

    status: str  # NEW (the cell was empty), IMPROVE (beat the incumbent), REJECTED (did not)
    cell: int  # flat cell index
    previous: str | None  # id of the incumbent it replaced or lost to; None for an empty cell
    previous_score: float | None

    @property
    def admitted(self) -> bool:
        return self.status != REJECTED


class Cells:
    """One elite per cell over a pyribs archive. Subclasses map descriptors to a cell."""

    def __init__(self, archive: GridArchive | CVTArchive, qd_offset: float | None,
                 min_improvement: float = 0.0):
        if min_improvement < 0:
            raise ValueError(f"min_improvement is a fraction >= 0, got {min_improvement}")
        self.min_improvement = float(min_improvement)  # relative: noisy scores must beat it to replace an elite
        self._archive = archive
        self._pending: list[tuple[int, float, Sequence[float], Sequence[float]]] = []  # not yet in ribs
        self.num_cells = int(archive.cells)
        # None: the QD-score is offset by the worst score offered so far (see `qd_score`).
        self.qd_offset = None if qd_offset is None else float(qd_offset)
        self.worst = math.inf  # lowest score ever offered to `add`, admitted or not
        self._cell_pid: list[str | None] = [None] * self.num_cells
        self._cell_score: list[float] = [-math.inf] * self.num_cells
        self._cell_seq: list[int] = [-1] * self.num_cells  # admission number of each cell's elite
        self._filled: list[int] = []  # filled cells in order of first filling: uniform sampling
        self._where: dict[str, int] = {}  # elite id -> its cell
        self._best: tuple[str, float] | None = None
        self._score_sum = 0.0  # sum of elite scores, for qd_score
        self._seq = 0  # admissions so far
        # Lazy max-heap of (-score, seq, cell): an entry is live while its cell's elite still
        # has that admission number. Gives top-k without scanning the elites.
        self._heap: list[tuple[float, int, int]] = []
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT)  # (seq, cell), newest last

    # -- subclasses ---------------------------------------------------------------------
    def _locate(self, descriptors: Sequence[float]) -> tuple[int, Sequence[float]]:
        """(cell index, measures to hand to ribs) for raw descriptors."""
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------
    def decide(self, program_id: str, score: float, descriptors: Sequence[float]) -> Admission:
        """What `add` would do with this program; changes nothing."""
        cell, _ = self._locate(descriptors)
        return self._judge(cell, _check_score(program_id, score))

    def add(self, program_id: str, score: float, descriptors: Sequence[float]) -> Admission:
        """Put the program in its cell if the cell is empty or it beats the incumbent strictly."""
        score = _check_score(program_id, score)
        cell, measures = self._locate(descriptors)
        verdict = self._judge(cell, score)
        self.worst = min(self.worst, score)
        if not verdict.admitted:
            return verdict
        seq = self._seq
        self._seq += 1
        self._pending.append((seq, score, measures, descriptors))
        if verdict.previous is not None:
            self._score_sum -= self._cell_score[cell]
            if self._where.get(verdict.previous) == cell:
                del self._where[verdict.previous]
        else:
            self._filled.append(cell)
        self._score_sum += score
        self._cell_pid[cell] = program_id
        self._cell_score[cell] = score
        self._cell_seq[cell] = seq
        self._where[program_id] = cell
        if self._best is None or score > self._best[1]:
            # Elites only ever improve, so the running maximum is always a current elite.
            self._best = (program_id, score)
        heapq.heappush(self._heap, (-score, seq, cell))
        if len(self._heap) > 4 * len(self._filled) + 64:
            self._compact_heap()
        self._recent.append((seq, cell))
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()
        return verdict

    def _judge(self, cell: int, score: float) -> Admission:
        incumbent = self._cell_pid[cell]
        if incumbent is None:
            return Admission(NEW, cell, None, None)
        previous_score = self._cell_score[cell]
        # Ties keep the incumbent; with a margin, so does a "win" inside the measurement's noise.
        status = IMPROVE if score > previous_score + self.min_improvement * abs(previous_score) else REJECTED
        return Admission(status, cell, incumbent, previous_score)

    def _flush(self) -> None:
        """Hand the buffered admissions to ribs in one batch add."""
        if not self._pending:
            return
        seqs, scores, measures, descriptors = zip(*self._pending, strict=True)
        self._pending.clear()
        # Admissions to one cell strictly improve, so ribs' per-cell maximum of the batch is
        # the last one admitted: its state ends equal to ours.
        self._archive.add(
            np.asarray(seqs, dtype=np.float64)[:, None],
            np.asarray(scores),
            np.array(measures, dtype=np.float64),
            descriptors=np.array(descriptors, dtype=np.float64).reshape(len(seqs), len(descriptors[0])),
        )
        if len(self._archive) != len(self._filled):  # a bug, never a user error
            raise RuntimeError(f"ribs holds {len(self._archive)} elites where evo holds {len(self._filled)}")

    @property
    def archive(self) -> GridArchive | CVTArchive:
        """The pyribs archive, up to date (for plots and analysis; do not add to it directly)."""
        self._flush()
        return self._archive

    # -- reading ----------------------------------------------------------------------------
    def elite_ids(self) -> list[str]:
        """Ids of all elites, in order of first filling of their cells."""
        return [self._cell_pid[c] for c in self._filled]  # type: ignore[misc]

    def sample_elite_ids(self, n: int, rng: np.random.Generator) -> list[str]:
        """`n` elite ids, uniform over filled cells, with replacement; [] if empty."""
        if not self._filled or n <= 0:
            return []
        # floor(U * count) rather than rng.integers: 3x cheaper per call, and uniform to 2^-53. In Python
        # floats, as numpy would compute it (the same product, truncated), without two small arrays.
        count = len(self._filled)
        return [self._cell_pid[self._filled[int(u * count)]] for u in rng.random(n).tolist()]  # type: ignore[misc]

    def elite_score(self, program_id: str) -> float | None:
        """The score of an elite, or None if the program is not an elite here."""
        cell = self._where.get(program_id)
        return None if cell is None else self._cell_score[cell]

    def elite_cell(self, program_id: str) -> int | None:
        return self._where.get(program_id)

    def best(self) -> tuple[str, float] | None:
        """(id, score) of the best elite; None if empty."""
        return self._best

    def top(self, k: int) -> list[tuple[str, float]]:
        """The `k` best elites as (id, score), best first; ties go to the earlier admission."""
        found: list[tuple[float, int, int]] = []
        while self._heap and len(found) < k:
            entry = heapq.heappop(self._heap)
            if self._cell_seq[entry[2]] == entry[1]:  # stale entries are simply dropped
                found.append(entry)
        for entry in found:
            heapq.heappush(self._heap, entry)
        return [(self._cell_pid[c], -neg) for neg, _, c in found]  # type: ignore[misc]

    def recent(self, k: int) -> list[str]:
        """Up to `k` ids of the most recently admitted programs that still hold their cell."""
        out: list[str] = []
        for seq, cell in reversed(self._recent):
            if self._cell_seq[cell] == seq:
                out.append(self._cell_pid[cell])  # type: ignore[arg-type]
                if len(out) == k:
                    break
        return out

    def _compact_heap(self) -> None:
        self._heap = [(-self._cell_score[c], self._cell_seq[c], c) for c in self._filled]
        heapq.heapify(self._heap)

    @property
    def num_elites(self) -> int:
        return len(self._filled)

    @property
    def coverage(self) -> float:
        """Filled cells / all cells."""
        return len(self._filled) / self.num_cells

    @property
    def effective_qd_offset(self) -> float:
        """The offset `qd_score` uses: `qd_offset` when given, else the worst score offered so far
        (0 before any)."""
        if self.qd_offset is not None:
            return self.qd_offset
        return self.worst if math.isfinite(self.worst) else 0.0

    @property
    def qd_score(self) -> float:
        """Sum over elites of (score - offset), the offset being `effective_qd_offset`.

        A fixed offset of 0 is meaningless for a minimised task (scores are negated values, so every
        elite would subtract) or any task whose scores can be negative: pyribs asks for an offset
        below every score. Without a declared bound (`qd_offset=None`) the worst score seen is that
        offset: every elite counts >= 0, and the QD-score never falls during a run (a new elite adds,
        an improvement adds, a worse newcomer lowers the offset, which adds to every elite). Compare
        runs by it only where they share a declared `qd_offset`.
        """
        return self.qd_score_at(self.effective_qd_offset)

    def qd_score_at(self, offset: float) -> float:
        """Sum over elites of (score - offset): the QD-score with a given offset (a population uses
        one offset for all its islands)."""
        return self._score_sum - len(self._filled) * offset

    def table(self) -> list[dict[str, Any]]:
        """One row per filled cell, by cell index: cell, program_id, score, descriptors (as given)."""
        data = self.archive.data(["index", "objective", "descriptors"])
        rows = [
            {
                "cell": int(cell),
                "program_id": self._cell_pid[int(cell)],
                "score": float(score),
                "descriptors": [float(x) for x in desc],
            }
            for cell, score, desc in zip(data["index"], data["objective"], data["descriptors"], strict=True)
        ]
        return sorted(rows, key=lambda r: r["cell"])


def _check_score(program_id: str, score: float) -> float:
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"program {program_id}: score must be finite to enter the cells, not {score}")
    return score


def _as_vector(descriptors: Sequence[float], n: int, what: str) -> list[float]:
    values = [float(x) for x in descriptors]
    if len(values) != n:
        raise ValueError(f"{what} expects {n} descriptor value(s), got {len(values)}: {values}")
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"{what}: descriptors must be finite, got {values}")
    return values


class GridCells(Cells):
    """A regular grid (ribs `GridArchive`): one axis per `DescriptorSpec`, `bins` cells over
    `[low, high]`. Values outside the range fall in the edge cells; boundaries never move.
    No specs means a single cell (a task without descriptors): plain elitism.
    """

    def __init__(self, specs: Sequence[DescriptorSpec], qd_offset: float | None = 0.0,
                 min_improvement: float = 0.0):
        self.specs = tuple(specs)
        for s in self.specs:
            if not s.high > s.low or s.bins < 1:
                raise ValueError(f"descriptor {s.name!r}: need high > low and bins >= 1, got {s}")
        axes = [(s.bins, float(s.low), float(s.high)) for s in self.specs] or [(1, 0.0, 1.0)]
        archive = GridArchive(
            solution_dim=1,
            dims=[b for b, _, _ in axes],
            ranges=[(lo, hi) for _, lo, hi in axes],
            qd_score_offset=qd_offset or 0.0,  # ribs needs a number; ours is `qd_score`
            extra_fields={"descriptors": ((len(self.specs),), np.float64)},
        )
        super().__init__(archive, qd_offset, min_improvement)
        self._axes = axes
        self._eps = float(archive.epsilon)

    @classmethod
    def single(cls, qd_offset: float | None = 0.0) -> GridCells:
        """One cell: for tasks that declare no descriptors."""
        return cls([], qd_offset)

    def _locate(self, descriptors: Sequence[float]) -> tuple[int, Sequence[float]]:
        if len(descriptors) != len(self.specs):
            _as_vector(descriptors, len(self.specs), "GridCells")  # raises, saying what is wrong
        if not self.specs:
            return 0, (0.0,)
        cell = 0
        clipped = []
        for (bins, lo, hi), x in zip(self._axes, descriptors, strict=True):
            x = float(x)
            if not math.isfinite(x):
                _as_vector(descriptors, len(self.specs), "GridCells")  # raises
            # Clip the value first (ribs clips the bin after an int32 cast, which overflows for
            # huge values), then ribs' own formula so that both agree on every boundary.
            x = min(max(x, lo), hi)
            clipped.append(x)
            i = int((bins * (x - lo) + self._eps) / (hi - lo))
            cell = cell * bins + min(max(i, 0), bins - 1)  # row-major, like ravel_multi_index
        return cell, clipped


class CVTCells(Cells):
    """Centroidal Voronoi cells (ribs `CVTArchive`) over frozen centroids: a program belongs to
    the nearest centroid. Build the centroids with `EmbeddingCellSpace` or ribs' `k_means_centroids`.
    """

    def __init__(self, centroids: np.ndarray, qd_offset: float | None = 0.0, min_improvement: float = 0.0):
        centroids = np.asarray(centroids, dtype=np.float64)
        if centroids.ndim != 2 or len(centroids) < 1:
            raise ValueError(f"CVTCells needs centroids of shape (cells, dims), got {centroids.shape}")
        lo, hi = centroids.min(axis=0), centroids.max(axis=0)
        small = len(centroids) <= _BRUTE_FORCE_MAX
        archive = CVTArchive(
            solution_dim=1,
            centroids=centroids,
            ranges=list(zip(lo.tolist(), np.maximum(hi, lo + 1e-9).tolist(), strict=True)),
            qd_score_offset=qd_offset or 0.0,  # ribs needs a number; ours is `qd_score`
            nearest_neighbors="brute_force" if small else "scipy_kd_tree",
            extra_fields={"descriptors": ((centroids.shape[1],), np.float64)},
        )
        super().__init__(archive, qd_offset, min_improvement)
        self.centroids = np.asarray(archive.centroids)
        self._small = small

    def _locate(self, descriptors: Sequence[float]) -> tuple[int, np.ndarray]:
        m = np.asarray(_as_vector(descriptors, self.centroids.shape[1], "CVTCells"))
        if self._small:  # ribs' brute-force formula, without its batch validation
            return int(np.argmin(np.square(self.centroids - m).sum(axis=1))), m
        return int(self._archive.index_of_single(m)), m
