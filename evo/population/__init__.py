"""The population: MAP-Elites cells over pyribs archives, islands, sampling, novelty.

`NoveltyArchive` (faiss) is imported lazily, on first use of the name, so that importing the
population never loads faiss unless novelty is wanted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evo.population.embedding_cells import EmbeddingCellSpace
from evo.population.grid import IMPROVE, NEW, REJECTED, Admission, Cells, CVTCells, GridCells
from evo.population.islands import Population
from evo.population.sampling import SamplingConfig, sample_inspirations, sample_parents

if TYPE_CHECKING:
    from evo.population.novelty import NoveltyArchive

__all__ = [
    "IMPROVE",
    "NEW",
    "REJECTED",
    "Admission",
    "CVTCells",
    "Cells",
    "EmbeddingCellSpace",
    "GridCells",
    "NoveltyArchive",
    "Population",
    "SamplingConfig",
    "sample_inspirations",
    "sample_parents",
]


def __getattr__(name: str) -> Any:
    if name == "NoveltyArchive":
        from evo.population.novelty import NoveltyArchive

        return NoveltyArchive
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
