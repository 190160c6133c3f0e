"""Which tasks a suite holds (`--suite kernels`, a comma list, a glob) and which of them are related.

Relatedness decides whose elites a task is shown (evo/suite/transfer.py). Two tasks are related when
they are of the same family (named in their `task.toml`) and either share a category, or lie near each
other in code-embedding space. A task's category is the set of tunable parameters its seeds declare
(`BLOCK_M`, `BLOCK_N`, `NUM_WARPS`, `NUM_STAGES` for the GEMM-like kernels; `BLOCK_ROWS`, `NUM_WARPS` for
the row-wise norms): read from the code, never guessed from a name, and exactly what the transplant
operator needs to carry settings over. Embedding distance is the cosine between the mean embeddings of the
two tasks' seeds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evo.embed import Embedder
from evo.errors import EvoError, OperatorError
from evo.operators.params import parse_parameters
from evo.program import Program
from evo.task import Task, list_tasks, load_task

_GLOB = set("*?[")


def resolve_suite(spec: str) -> list[str]:
    """Task names of `spec`: a family (`kernels`), task names, globs (`kernels/*_fwd`) or task folders, comma
    separated; in the order given, each task once. Raises `EvoError` naming a part that matches nothing."""
    known = list_tasks()
    families = sorted({name.split("/", 1)[0] for name in known if "/" in name})
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in families:
            found = [n for n in known if n.startswith(part + "/")]
        elif _GLOB & set(part):
            found = [n for n in known if fnmatch.fnmatchcase(n, part)]
            if not found:
                raise EvoError(f"--suite: {part!r} matches no task; families: {', '.join(families)}, e.g. "
                               f"`--suite {families[0] if families else 'kernels'}/*_fwd` (`evo tasks` lists them)")
        elif (Path(part) / "task.toml").is_file():
            found = [str(Path(part).resolve())]
        else:
            found = [load_task(part).name]  # an unknown name: load_task's error lists the known ones
        names += [n for n in found if n not in names]
    if len(names) < 2:
        raise EvoError(f"--suite {spec!r} names {len(names)} task(s); a suite needs at least two (for one task, "
                       "`evo run TASK`)")
    return names


def category(seeds: Sequence[Program]) -> tuple[str, ...]:
    """The tunable parameters the task's seeds declare (sorted names; () when none, or unreadable)."""
    names: set[str] = set()
    for seed in seeds:
        try:
            names.update(p.name for p in parse_parameters(seed.text))
        except OperatorError:
            continue
    return tuple(sorted(names))


@dataclass(frozen=True)
class Relation:
    """One related task: its name, whether it shares the category, and the cosine of the seeds' embeddings."""

    task: str
    same_category: bool
    similarity: float

    def to_list(self) -> list[object]:
        """As stored in the suite's meta."""
        return [self.task, self.same_category, round(self.similarity, 6)]


def related_tasks(tasks: Sequence[Task], embedder: Embedder, k: int = 3) -> dict[str, list[Relation]]:
    """For each task, its related tasks, closest first: of its family, those of its category and the `k`
    nearest by seed embedding (those of its category first, then by cosine)."""
    seeds = {t.name: t.seeds() for t in tasks}
    cats = {name: category(s) for name, s in seeds.items()}
    means = {}
    for name, progs in seeds.items():
        vectors = np.stack([embedder.embed([p.text])[0] for p in progs])  # one call each: a server's batch limit
        mean = vectors.mean(axis=0)
        means[name] = mean / (np.linalg.norm(mean) or 1.0)
    out: dict[str, list[Relation]] = {}
    for t in tasks:
        others = [o for o in tasks if o.name != t.name and o.family == t.family]
        scored = [Relation(o.name, bool(cats[t.name]) and cats[o.name] == cats[t.name],
                           float(means[t.name] @ means[o.name])) for o in others]
        scored.sort(key=lambda r: (not r.same_category, -r.similarity))
        nearest = {r.task for r in sorted(scored, key=lambda r: -r.similarity)[:k]}
        out[t.name] = [r for r in scored if r.same_category or r.task in nearest]
    return out


def load_suite_tasks(names: Sequence[str]) -> list[Task]:
    """The tasks of a suite, loaded (a broken one fails with its own error)."""
    return [load_task(n) for n in names]
