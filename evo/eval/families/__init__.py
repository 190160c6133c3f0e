"""Task families: what kind of problem a task is, named by the `family` key of its `task.toml`.

A family owns how a candidate's job is built, which backend runs it by default, how the answer is scored
on the trusted side, its dynamic checks (the names registered for it in the gate, `evo/audit/gate.py`) and
its fidelities: ordered rungs, cheapest first (data for now; a cascade can climb them later).

    family = family_of(task)                       # an EvoError naming task.toml, the key and the valid values
    backend = family.backend(task, workers, scratch)
    job = family.job(task, program)                # contents, task name, folder hash: never a path
    result = family.score(task, await backend.evaluate(job.program))

The pipeline (`evo/eval/pipeline.py`) does exactly this, between the screen and the full audit. A new
family: subclass `Family`, then `register_family(MyFamily())`; tasks name it in their `task.toml`.
"""

from __future__ import annotations

from typing import Any

from evo.errors import EvoError
from evo.eval.families.base import Family, Fidelity, InvalidJob, Job, task_hash
from evo.eval.families.kernels import KernelsFamily
from evo.eval.families.math import MathFamily
from evo.eval.families.training import TrainingFamily

FAMILIES: dict[str, Family] = {}


def register_family(family: Family, replace: bool = False) -> Family:
    """Add a family to the registry under its `name`."""
    if not family.name or not family.fidelities:
        raise EvoError(f"{type(family).__name__}: a family needs a `name` and at least one fidelity")
    if family.name in FAMILIES and not replace:
        raise EvoError(f"task family {family.name!r} is registered already; pass replace=True to redefine it")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family called `name`."""
    if name not in FAMILIES:
        raise EvoError(f"unknown task family {name!r}; valid values: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_of(task: Any) -> Family:
    """The family the task's `task.toml` names; an error that says what to write when it names none or
    an unknown one, or when the task's reference.py lacks what the family calls (`Family.check_reference`)."""
    config = task.config
    path = config.path or task.root / "task.toml"
    valid = ", ".join(sorted(FAMILIES))
    name = config.family
    if not name:
        raise EvoError(f"{path}: the key `family` is missing; add a line `family = \"...\"` with one of: {valid}")
    if name not in FAMILIES:
        raise EvoError(f"{path}: `family = {name!r}` is no task family; valid values: {valid}")
    family = FAMILIES[name]
    family.check_reference(task)
    return family


for _family in (MathFamily(), KernelsFamily(), TrainingFamily()):
    register_family(_family)

__all__ = ["FAMILIES", "Family", "Fidelity", "InvalidJob", "Job", "family_of", "get_family", "register_family",
           "task_hash"]
