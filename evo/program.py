"""`Program`: one candidate of a search, from proposal to verdict.

Stdlib only: a GPU worker imports this module and must start fast on a machine that has
nothing but torch and triton.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

Source = str | dict[str, str]
"""A program is one file (`str`) or several (`{relative path: text}`); `MAIN_FILE` is the entry."""

MAIN_FILE = "candidate.py"


class Status(StrEnum):
    """Where a program is in its life; the store records every transition as an event."""

    PROPOSED = "proposed"  # screened and queued for evaluation
    REJECTED = "rejected"  # refused before evaluation (parse error, near-duplicate, static check)
    EVALUATED = "evaluated"  # evaluation finished, valid result
    FAILED = "failed"  # evaluation finished, candidate crashed, timed out or was invalid


def new_program_id() -> str:
    """A fresh, globally unique program id (hex, 32 chars)."""
    return uuid.uuid4().hex


def source_text(source: Source) -> str:
    """The main file's text: what operators, embedders and prompts read."""
    if isinstance(source, str):
        return source
    return source[MAIN_FILE]


def source_files(source: Source) -> dict[str, str]:
    """The program as `{relative path: text}`, whatever form it was given in."""
    if isinstance(source, str):
        return {MAIN_FILE: source}
    return dict(source)


def source_hash(source: Source) -> str:
    """Content hash of all files; identical programs hash alike whatever their id."""
    h = hashlib.sha256()
    for path, text in sorted(source_files(source).items()):
        h.update(path.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class Program:
    """A candidate program and everything learned about it.

    `score` is oriented so that higher is better whatever the task's objective; the raw
    metric is kept in `metrics`. `descriptors` are the behaviour coordinates of the
    MAP-Elites grid. `seq` is the order of proposal within a run (assigned by the store).
    """

    source: Source
    id: str = field(default_factory=new_program_id)
    parents: tuple[str, ...] = ()
    operator: str = "seed"
    island: int = 0
    seq: int = -1
    status: Status = Status.PROPOSED
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    descriptors: tuple[float, ...] = ()
    error: str | None = None
    verdict: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The main file's text."""
        return source_text(self.source)

    @property
    def hash(self) -> str:
        return source_hash(self.source)

    @property
    def ok(self) -> bool:
        """Evaluated with a valid score."""
        return self.status == Status.EVALUATED and self.score is not None
