"""The auditor's vocabulary: levels, checks, their results, and the verdict that gathers them.

A `Check` has a name, the `Level` at which it first runs, and a function that looks at a `Subject`
(the candidate's files, what the static pass learned about them, the task's allowances, the harness's
measured facts) and returns a `CheckResult`. The gate (`evo.audit.gate.audit`) runs every check of a
level and the levels below it, and folds their results into one `Verdict`.

Levels are cumulative: `full` runs the `screen` checks again plus the dynamic ones, `publish` runs
everything in `full` plus stricter checks. Stdlib only: a GPU worker imports this.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from evo.errors import EvoError


class Level(StrEnum):
    """When a check runs. Each level includes the checks of the levels before it."""

    SCREEN = "screen"  # cheap and static, before evaluation: every candidate, a few milliseconds
    FULL = "full"  # before admission to the population: screen + the harness's dynamic checks
    PUBLISH = "publish"  # before export to archive/: full + stricter checks, every dynamic check required

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Level) -> bool:
        """True when a check of level `other` runs at this level."""
        return _RANK[other] <= _RANK[self]

    @classmethod
    def parse(cls, value: Level | str) -> Level:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(v.value for v in cls)
            raise EvoError(f"unknown audit level {value!r}; choose one of: {names}") from None


_RANK = {Level.SCREEN: 0, Level.FULL: 1, Level.PUBLISH: 2}


@dataclass(frozen=True)
class CheckResult:
    """One check's answer. `reason` is empty when it passed, otherwise sentences a person can act on:
    what was found, where (file and line), why it is not allowed, what to do instead."""

    passed: bool
    reason: str = ""

    @classmethod
    def ok(cls) -> CheckResult:
        return cls(True, "")

    @classmethod
    def fail(cls, reason: str) -> CheckResult:
        return cls(False, reason)


@dataclass
class Subject:
    """What a check looks at.

    `files` maps relative path to text (`candidate.py` is the entry point). `analysis` is the static
    index built once per audit by `evo.audit.static.analyse` (None when the source does not parse).
    `allow` holds the check and capability names the task allows. `context` holds the harness's
    measured facts (`context["dynamic"]`, `context["facts"]`) at level `full` and above.
    """

    files: dict[str, str]
    level: Level
    allow: frozenset[str] = frozenset()
    analysis: Any = None
    task: Any = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str | None:
        """The task's family as its task.toml names it (`kernels`, `math`, `training`), or None without a task."""
        family = getattr(getattr(self.task, "config", None), "family", None)
        return family if isinstance(family, str) else None


class CheckFn(Protocol):
    def __call__(self, subject: Subject) -> CheckResult: ...


@dataclass(frozen=True)
class Check:
    """A named rule. `stops` says in a few words which hack it stops (for the docs and the reasons);
    `capabilities` are the finer names a task may allow instead of the whole check."""

    name: str
    level: Level
    fn: Callable[[Subject], CheckResult]
    stops: str = ""
    capabilities: tuple[str, ...] = ()

    def run(self, subject: Subject) -> CheckResult:
        return self.fn(subject)


def as_check(obj: Any, default_level: Level = Level.SCREEN) -> Check:
    """A task's `AUDIT_CHECKS` entry as a `Check`: a `Check` already, or a function named after its rule."""
    if isinstance(obj, Check):
        return obj
    if callable(obj):
        name = getattr(obj, "audit_name", None) or getattr(obj, "__name__", None)
        if not name or name == "<lambda>":
            raise EvoError("an AUDIT_CHECKS entry needs a name: wrap it as Check(name, level, fn) "
                           "or use a named function (`def no_float64(subject): ...`)")
        level = Level.parse(getattr(obj, "audit_level", default_level))
        return Check(name=str(name), level=level, fn=obj, stops=(obj.__doc__ or "").strip().split("\n")[0])
    raise EvoError(f"AUDIT_CHECKS holds a {type(obj).__name__}; each entry must be a Check or a function "
                   "taking a Subject and returning a CheckResult")


@dataclass
class Verdict:
    """The gate's answer: passed or not, and for each failed check the reason.

    `reasons` is a list of `(check name, reason)`; `checks` the names of every check that ran;
    `allowed` the allowances of the task that were in force.
    """

    passed: bool
    reasons: list[tuple[str, str]] = field(default_factory=list)
    level: Level = Level.SCREEN
    checks: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed, in order, without repeats."""
        return list(dict.fromkeys(name for name, _ in self.reasons))

    def text(self, limit: int = 8) -> str:
        """One paragraph for a person or an LLM operator: the failures with their reasons."""
        if self.passed:
            return f"audit ({self.level}): pass"
        lines = [f"audit ({self.level}): fail"]
        lines += [f"- {name}: {reason}" for name, reason in self.reasons[:limit]]
        if len(self.reasons) > limit:
            lines.append(f"- ... and {len(self.reasons) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "passed": self.passed,
            "level": str(self.level),
            "reasons": [{"check": n, "reason": r} for n, r in self.reasons],
            "checks": list(self.checks),
            "allowed": list(self.allowed),
            "seconds": round(self.seconds, 6),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            passed=bool(data["passed"]),
            reasons=[(str(r["check"]), str(r["reason"])) for r in data.get("reasons", [])],
            level=Level.parse(data.get("level", "screen")),
            checks=[str(c) for c in data.get("checks", [])],
            allowed=[str(a) for a in data.get("allowed", [])],
            seconds=float(data.get("seconds", 0.0)),
        )
