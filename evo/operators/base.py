"""The operator protocol: how every child is made, by an LLM or without one.

An operator receives a `ProposalRequest` (parents, inspirations, feedback, a seeded RNG) and
returns one or more `Proposal`s. It is `async` so that an LLM operator waiting on a server
and an instant AST operator share one interface; the engine awaits both the same way.
An operator that cannot make a child raises `OperatorError` with a reason; the engine
records that as an operator error (apart from failed evaluations) and moves on. An operator
that can tell cheaply, from the parents alone, that it has nothing to work on (no parameters
declared, two identical parents) says so in `applicable`, and the engine then chooses another
operator for those parents instead of calling it. Operators never touch the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from evo.program import Program, Source


@dataclass
class ProposalRequest:
    """Everything an operator may read to make a child."""

    parents: list[Program]
    inspirations: list[Program] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    task_prompt: str = ""
    feedback: list[str] = field(default_factory=list)
    lessons: list[str] = field(default_factory=list)  # what the run learned so far (evo/lessons.py), newest first
    # Elites of related tasks in a suite run (evo/suite/transfer.py), each with `meta["task"]` naming its task.
    # An operator that uses one says so in its proposal's `meta["transfer"]`: the store credits transfer by it.
    foreign: list[Program] = field(default_factory=list)


@dataclass
class Proposal:
    """A child's source and how it was made; the engine turns it into a `Program`."""

    source: Source
    parents: tuple[str, ...]
    operator: str
    meta: dict[str, object] = field(default_factory=dict)  # e.g. which literal moved, tokens used


@runtime_checkable
class Operator(Protocol):
    """Makes children from parents. `arity` is how many parents `propose` expects.

    An operator may set `checks_syntax = True` when its children always parse (it checked, or
    it cannot break syntax); the engine then skips its own parse of them. It may define
    `applicable(parents) -> bool` (see `applies`), and set `calls_model = True` when its calls
    wait on a model (an LLM server that may be slow, loading or away): the engine then keeps
    proposal streams free for the other operators.
    """

    name: str
    arity: int

    async def propose(self, request: ProposalRequest) -> list[Proposal]: ...


def applies(op: Operator, parents: Sequence[Program]) -> bool:
    """Whether `op` can make a child of `parents` (its first `arity` of them), as far as it can tell cheaply.

    Operators without an `applicable` method apply to any parents. `applicable` answers True
    when in doubt (a malformed declaration, say): the call then raises `OperatorError` with the
    reason, which the run records, rather than the reason going unseen.
    """
    check = getattr(op, "applicable", None)
    return len(parents) >= op.arity and (check is None or bool(check(parents[: op.arity])))


def calls_model(op: Operator) -> bool:
    """Whether calls of `op` wait on a model server (see `Operator`)."""
    return bool(getattr(op, "calls_model", False))
