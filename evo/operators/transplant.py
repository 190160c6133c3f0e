"""Parameter transplant: a related task's tuned parameter settings, written into this task's parent.

In a suite run (evo/suite/), tasks whose seeds declare the same tunable parameters (`BLOCK_M = 64  # evo:
[32, 64, 128]`, see `evo.operators.params`) often want similar settings: the tile sizes and warps that made
one GEMM fast are a good first guess for its sibling. `ParamTransplant` takes one elite of a related task
from `request.foreign` (the engine fills it in a suite run; it is empty in a run of one task), and writes
the values of the parameters both declare alike (same name and kind, the donor's value legal in the
parent's domain) into the parent: all of them, or, half of the time, a random part of them, so that a
setting that is already here as a whole can still move part of the way. Only the values' characters
change. The child's `meta["transfer"]` names the donor and its task: the store credits the transfer by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from evo.errors import OperatorError
from evo.operators.base import Proposal, ProposalRequest
from evo.operators.params import (
    Parameter,
    _declares,
    _differs,
    _parse_cached,
    parameters_child,
    parent_parameters,
)
from evo.program import Program, source_text


def shared_settings(params: Sequence[Parameter], donor_text: str) -> list[tuple[Parameter, object]]:
    """(parameter of ours, donor's value) for each parameter the donor declares alike with another value."""
    try:
        theirs = {p.name: p for p in _parse_cached(donor_text)}
    except OperatorError:
        return []  # a donor whose declarations do not read gives nothing; ours are checked by the caller
    out = []
    for p in params:
        q = theirs.get(p.name)
        if q is not None and q.kind == p.kind and p.contains(q.value) and _differs(p, q.value):
            out.append((p, q.value))
    return out


class ParamTransplant:
    """Write a related task's elite's parameter values into the parent (a suite run's transfer operator)."""

    name = "transplant"
    arity = 1
    checks_syntax = True  # only literal values change: a parseable parent gives a parseable child

    def __repr__(self) -> str:
        return "ParamTransplant()"

    def applicable(self, parents: Sequence[Program]) -> bool:
        """Whether the parent declares parameters (the donors are known only at the call)."""
        return _declares(parents[0])

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        text, params = parent_parameters(request, self.name, "transplant into")
        if not request.foreign:
            raise OperatorError("no elite of a related task was offered: transplant takes parameter settings from "
                                "the other tasks of a suite run (`evo run --suite ...`); give it weight 0 otherwise")
        donors = [(d, s) for d in request.foreign if (s := shared_settings(params, source_text(d.source)))]
        if not donors:
            tasks = sorted({str(d.meta.get("task", "?")) for d in request.foreign})
            raise OperatorError(f"the elites offered (of {', '.join(tasks)}) declare none of this program's "
                                "parameters with another legal value")
        donor, settings = donors[int(request.rng.integers(len(donors)))]
        if len(settings) > 1 and request.rng.random() < 0.5:
            keep = request.rng.random(len(settings)) < 0.5
            keep[int(request.rng.integers(len(settings)))] = True
            settings = [s for s, k in zip(settings, keep, strict=True) if k]
        transfer = [{"task": str(donor.meta.get("task", "")), "program": donor.id, "role": "parent"}]
        return [parameters_child(request, self.name, text, settings, transfer=transfer)]
