"""How children are made: the operator registry.

Every operator follows the protocol in `evo.operators.base` (`name`, `arity`, async
`propose`). `OPERATORS` maps a name to a zero-argument factory; `build_operators` turns a
`{name: weight}` table (from the run's configuration) into the weighted operators the engine
samples from. An operator that needs set-up (the LLM operator needs a client) is registered
the same way, with a factory that closes over what it needs:

    registry = {**OPERATORS, "llm_diff": lambda: LLMDiff(client)}
    build_operators({"llm_diff": 0.7, "constants": 0.3}, registry)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

from evo.errors import EvoError
from evo.operators.base import Operator, Proposal, ProposalRequest
from evo.operators.constants import ConstantMutation
from evo.operators.crossover import FunctionCrossover
from evo.operators.params import ParamCrossover, ParamMutation
from evo.operators.transplant import ParamTransplant

OperatorFactory = Callable[[], Operator]

OPERATORS: dict[str, OperatorFactory] = {
    "constants": ConstantMutation,
    "params": ParamMutation,
    "params_crossover": ParamCrossover,
    "crossover": FunctionCrossover,
    # A suite run's transfer of parameter settings between related tasks (evo/suite/); not a default:
    # in a run of one task it has no donor.
    "transplant": ParamTransplant,
}

DEFAULT_WEIGHTS: dict[str, float] = {
    "constants": 0.5,
    "params": 0.25,
    "params_crossover": 0.1,
    "crossover": 0.15,
}


def build_operators(
    weights: Mapping[str, float], registry: Mapping[str, OperatorFactory] = OPERATORS
) -> list[tuple[Operator, float]]:
    """One operator per name with a positive weight, paired with that weight (not normalised).

    Raises `EvoError` for a name the registry lacks, a weight that is negative or not a finite
    number, a total weight that is not positive, or a factory whose product breaks the protocol.
    A weight of 0 switches an operator off.
    """
    known = ", ".join(sorted(registry))
    for name, weight in weights.items():
        if name not in registry:
            raise EvoError(f"unknown operator {name!r} in the operator weights; known operators: {known}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise EvoError(f"the weight of operator {name!r} must be a finite number, got {weight!r}")
        if weight < 0:
            raise EvoError(f"the weight of operator {name!r} is negative ({weight}); use 0 to switch it off")
    if sum(weights.values()) <= 0:
        raise EvoError(
            f"the operator weights {dict(weights)} sum to {sum(weights.values())}; "
            f"give at least one operator a positive weight (known operators: {known})"
        )
    built: list[tuple[Operator, float]] = []
    for name, weight in weights.items():
        if weight == 0:
            continue
        op = registry[name]()
        if not isinstance(op, Operator) or not isinstance(op.arity, int) or op.arity < 1:
            raise EvoError(
                f"the factory registered as {name!r} made {op!r}, which is not an operator: it needs "
                "`name: str`, `arity: int` (at least 1) and `async def propose(request) -> list[Proposal]`"
            )
        built.append((op, float(weight)))
    return built


__all__ = [
    "DEFAULT_WEIGHTS",
    "OPERATORS",
    "ConstantMutation",
    "FunctionCrossover",
    "Operator",
    "OperatorFactory",
    "ParamCrossover",
    "ParamMutation",
    "ParamTransplant",
    "Proposal",
    "ProposalRequest",
    "build_operators",
]
