"""The schema of `task.toml`, checked with pydantic, and the one-line messages its mistakes turn into.

`check_task_file(raw, path)` returns the validated `TaskFile` or raises `EvoError` with one line that names
the file, the key, the expected type and the fix: an unknown key gets the nearest known one ("did you mean
`metric`?"), a key written below a table that belongs above it is told so. Every model forbids unknown keys:
a typo must not be ignored until the run fails with "metric 'score' missing". Validation is strict (TOML has
types: `timeout_s = "10"` is a mistake to name, not a string to coerce).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from evo.errors import EvoError


class _Table(BaseModel):
    """A TOML table: unknown keys are errors, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Evaluation(_Table):
    """`[evaluation]`: the limits of one candidate's run."""

    timeout_s: float = Field(30.0, gt=0, description="a number of seconds above 0, e.g. `timeout_s = 10`")
    memory_mb: int = Field(2048, gt=0, description="a whole number of MB above 0, e.g. `memory_mb = 1024`")
    max_output_mb: int = Field(16, gt=0, description="a whole number of MB above 0, e.g. `max_output_mb = 16`")
    min_improvement: float = Field(0.0, ge=0, description="a fraction of 0 or more, e.g. `min_improvement = 0.02`")


class Descriptor(_Table):
    """One `[[descriptors]]` entry: an axis of the MAP-Elites grid."""

    name: str = Field(description="a string naming a metric that reference.evaluate returns, e.g. `name = \"spread\"`")
    low: float = Field(description="a number, the axis' lower end, e.g. `low = 0.0`")
    high: float = Field(description="a number above `low`, the axis' upper end, e.g. `high = 1.0`")
    bins: int = Field(10, ge=1, description="a whole number of 1 or more, e.g. `bins = 10`")

    @model_validator(mode="after")
    def _range(self) -> Descriptor:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g}); swap them or widen the range")
        return self


class Audit(_Table):
    """`[audit]`: what the auditor allows this task's candidates."""

    allow: list[str] = Field(default_factory=list,
                             description='a list of check names, e.g. `allow = ["sleep_and_clock"]`')


class TaskFile(_Table):
    """The whole of `task.toml`."""

    family: str = Field("", description='a string naming the task family, e.g. `family = "math"`')
    objective: Literal["maximize", "minimize"] = Field(
        "maximize", description='"maximize" or "minimize", e.g. `objective = "maximize"`')
    metric: str = Field("score", description='a string naming the metric evaluate returns, e.g. `metric = "score"`')
    description: str = Field("", description='a string, e.g. `description = "Pack 26 circles ..."`')
    evaluation: Evaluation = Field(default_factory=Evaluation,
                                   description="a table `[evaluation]` holding timeout_s, memory_mb, ...")
    descriptors: list[Descriptor] = Field(default_factory=list,
                                          description="tables `[[descriptors]]`, each with name, low, high, bins")
    best_known: dict[str, float] = Field(default_factory=dict,
                                         description="a table `[best_known]` of numbers, e.g. `alphaevolve = 2.635`")
    audit: Audit = Field(default_factory=Audit, description='a table `[audit]` holding `allow = ["..."]`')
    # The training family's harness settings, checked by that family (evo/eval/training/spec.py).
    training: dict[str, object] = Field(default_factory=dict,
                                        description="a table `[training]` of the training harness's settings")

    @model_validator(mode="after")
    def _unique_descriptors(self) -> TaskFile:
        names = [d.name for d in self.descriptors]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"descriptor {twice[0]!r} is named twice in [[descriptors]]; give each axis its own metric")
        return self


def check_task_file(raw: dict[str, object], path: Path) -> TaskFile:
    """The validated contents of a `task.toml` already parsed to `raw`; an `EvoError` of one line if wrong."""
    try:
        return TaskFile.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise EvoError(f"{path}: {_explain(errors[0])}{more}") from None


# ----------------------------------------------------------------------------- messages


def _where(loc: tuple[int | str, ...]) -> str:
    """A location as a person finds it in the file: `timeout_s` in [evaluation], `high` in [[descriptors]] #2."""
    if not loc:
        return "the file"
    *table, key = loc
    if isinstance(key, int):  # an item of a list, e.g. ("audit", "allow", 0)
        return f"item {key + 1} of {_where(tuple(table))}"
    if not table:
        return f"key `{key}`"
    if table[0] == "descriptors" and len(table) > 1:
        return f"key `{key}` in [[descriptors]] #{int(table[1]) + 1}"
    return f"key `{key}` in [{'.'.join(map(str, table))}]"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose table holds the last key of `loc` (None where the table is a plain dict)."""
    model: type[BaseModel] = TaskFile
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _inner_model(field) if field else None
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds, directly or as a list's items."""
    annotation = field.annotation
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _field(loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field the error is about: the last key of `loc` that a model declares (a key of a plain table such
    as [best_known] and an item of a list are their table's or list's field)."""
    for i in range(len(loc) - 1, -1, -1):
        key = loc[i]
        if isinstance(key, str):
            model = _model_at(loc[: i + 1])
            if model is not None and key in model.model_fields:
                return model.model_fields[key]
    return None


def _explain(error: ErrorDetails) -> str:
    """One error as a sentence: where, what is wrong, what to write."""
    loc = tuple(error["loc"])
    kind = error["type"]
    where = _where(loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    field = _field(loc)
    expected = field.description if field is not None and field.description else "another value"
    if kind == "missing":
        return f"{where} is missing; expected {expected}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":  # one of our model validators: its message says it all
        table = f"[[descriptors]] #{int(loc[1]) + 1}: " if loc[:1] == ("descriptors",) and len(loc) > 1 else ""
        return table + message
    got = error.get("input")
    if len(loc) == 2 and loc[0] == "best_known" and str(loc[1]) in TaskFile.model_fields:
        return (f"{where}: `{loc[1]}` belongs above the first [table] (a key written below `[best_known]` "
                f"belongs to that table); move the line up")
    if isinstance(loc[-1], int):  # an item of a list: pydantic's words say what the item should be
        return f"{where} is {got!r}: {message[0].lower() + message[1:]}; expected {expected}"
    return f"{where} is {got!r}; expected {expected}"


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """An unknown key: the nearest known key at that place, or the table it belongs in."""
    key = str(loc[-1])
    model = _model_at(loc)
    known = sorted(model.model_fields) if model is not None else []
    where = _where(loc)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown {where}: did you mean `{close[0]}`? (known keys here: {', '.join(known)})"
    # A key of another table: say which table it belongs in.
    for name, field in TaskFile.model_fields.items():
        inner = _inner_model(field)
        if inner is not None and key in inner.model_fields:
            table = f"[[{name}]]" if name == "descriptors" else f"[{name}]"
            return f"unknown {where}: `{key}` belongs in the {table} table; move the line below `{table}`"
    if len(loc) > 1 and key in TaskFile.model_fields:
        return (f"unknown {where}: `{key}` belongs above the first [table] (a key written below a table header "
                "belongs to that table); move the line up")
    return f"unknown {where}; remove it (known keys here: {', '.join(known)})"
