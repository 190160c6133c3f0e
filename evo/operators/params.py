"""Tunable parameters a program declares, and the DEAP operators that tune them.

A program declares a parameter by ending a module-level assignment with an `# evo:` comment:

```python
ROWS = 5            # evo: int(3, 8)
JITTER = 0.02       # evo: float(0.0, 0.1)
PATTERN = "hex"     # evo: ["grid", "hex", "spiral"]
```

A declaration is a module-level single-target assignment whose line ends with `# evo: `
followed by `int(lo, hi)`, `float(lo, hi)` (both bounds inclusive) or a Python list literal of
choices. The value must be a literal inside its domain. Specs are read with `ast`, never `eval`.
`N = 12  # evo: fixed` (any words may follow) declares a number the search leaves alone: no operator
here tunes it, and the `constants` operator skips every `# evo:` line.

`ParamMutation` moves some parameters within their bounds (DEAP's bounded polynomial mutation,
as in NSGA-II) and `ParamCrossover` mixes the values two parents declare (DEAP's uniform
crossover). Both rewrite only the value's characters, so the rest of the text is untouched.

DEAP draws from the module-global `random`; to be deterministic given `request.rng` without
touching global state (other threads may use it), each call runs DEAP's own function with that
global name rebound to a private `random.Random` (see `_seeded`).
"""

from __future__ import annotations

import ast
import math
import random
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from deap import tools

from evo.ast_parse import parse_expression, parse_source
from evo.errors import OperatorError
from evo.operators.base import Proposal, ProposalRequest
from evo.operators.constants import lex, parent_texts, with_main_text
from evo.program import Program, source_text

Kind = Literal["int", "float", "choice"]

# What `ast.literal_eval` raises for a non-literal (`f(5)`, `{[]}`, `1 + x`).
_LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)
_SYNTAX = "declare a parameter as `NAME = value  # evo: int(lo, hi)`, `float(lo, hi)` or `[choice, ...]`"


@dataclass(frozen=True)
class Parameter:
    """One declared parameter. `span` is where its value's text lies (`text[start:end]`)."""

    name: str
    kind: Kind
    domain: tuple[Any, ...]  # (lo, hi) for int and float; the choices for a choice
    value: Any
    span: tuple[int, int]
    line: int

    def contains(self, value: object) -> bool:
        """Whether `value` is a legal value of this parameter (bools are not ints here)."""
        if self.kind == "choice":
            return any(type(c) is type(value) and c == value for c in self.domain)
        lo, hi = self.domain
        if self.kind == "int":
            return type(value) is int and lo <= value <= hi
        return type(value) in (int, float) and math.isfinite(value) and lo <= value <= hi


# --- reading and writing declarations ---------------------------------------------------------


def _fail(line: int, reason: str) -> OperatorError:
    return OperatorError(f"malformed parameter declaration at line {line}: {reason}; {_SYNTAX}")


class _Refused(Exception):
    """A declaration's fault, said without its line (the caller knows where the line stands)."""


@lru_cache(maxsize=4096)  # relatives share their declarations: parse each distinct one once
def _spec(spec: str) -> tuple[Kind, tuple[Any, ...]]:
    try:
        node = parse_expression(spec).body
    except SyntaxError:
        raise _Refused(f"cannot read the spec `{spec}`") from None
    if isinstance(node, ast.List):
        try:
            choices = ast.literal_eval(node)
        except _LITERAL_ERRORS:
            raise _Refused("choices must be literals (numbers, strings, bools, None)") from None
        if len(choices) < 2:
            raise _Refused("a choice needs at least two options")
        if any(type(a) is type(b) and a == b for i, a in enumerate(choices) for b in choices[:i]):
            raise _Refused("choices must be distinct")
        return "choice", tuple(choices)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("int", "float")
        and len(node.args) == 2
        and not node.keywords
    ):
        kind: Kind = node.func.id  # type: ignore[assignment]
        try:
            lo, hi = (ast.literal_eval(a) for a in node.args)
        except _LITERAL_ERRORS:
            raise _Refused("bounds must be number literals") from None
        allowed = (int,) if kind == "int" else (int, float)
        if type(lo) not in allowed or type(hi) not in allowed:
            raise _Refused(f"{kind} bounds must be {kind} literals")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise _Refused(f"bounds must be finite with lo < hi, got ({lo}, {hi})")
        return kind, (lo, hi) if kind == "int" else (float(lo), float(hi))
    raise _Refused(f"unknown spec `{spec}`")


def _char_col(line_text: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; string slicing counts characters."""
    if line_text.isascii():
        return byte_col
    return len(line_text.encode()[:byte_col].decode())


@lru_cache(maxsize=4096)
def _parse_line(code: str) -> list[ast.stmt]:
    """One declaration line's statements (cached: callers only read the nodes)."""
    return parse_source(code).body


@lru_cache(maxsize=4096)  # a child repeats all but the line or two a parameter operator changed
def _declaration(code: str, spec: str) -> tuple[str, Kind, tuple[Any, ...], Any, int, int]:
    """The parameter that the code `code` of a line declares with `spec`, wherever the line stands:
    (name, kind, domain, value, the value's first and end columns); `_Refused` says what is wrong.
    Read once per distinct line: `ast.literal_eval` leaves cyclic garbage for the collector every call."""
    if not code.strip():
        raise _Refused("`# evo:` must end the line of an assignment")
    if code[0].isspace():
        raise _Refused("parameters are declared at module level, on one line, without indentation")
    try:
        stmts = _parse_line(code)
    except SyntaxError:
        raise _Refused("the assignment must fit on its line") from None
    stmt = stmts[0] if len(stmts) == 1 else None
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target: ast.expr = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        target = stmt.target
    else:
        raise _Refused("expected one assignment to one name, like `ROWS = 5`")
    if not isinstance(target, ast.Name):
        raise _Refused("expected one assignment to one name, like `ROWS = 5`")
    value_node = stmt.value
    assert value_node is not None  # checked above for AnnAssign; always set for Assign
    try:
        value = ast.literal_eval(value_node)
    except _LITERAL_ERRORS:
        raise _Refused(f"the value of {target.id} must be a literal") from None
    kind, domain = _spec(spec)
    start = _char_col(code, value_node.col_offset)
    end = _char_col(code, value_node.end_col_offset or 0)
    if kind == "float" and type(value) is int:
        value = float(value)  # `X = 0  # evo: float(0, 1)` is a float parameter at 0.0
    if not Parameter(target.id, kind, domain, value, (start, end), 0).contains(value):
        raise _Refused(f"{target.id} = {value!r} lies outside its domain {spec}")
    return target.id, kind, domain, value, start, end


def _parse_declaration(text: str, comment: tuple[int, int]) -> Parameter:
    cstart, cend = comment
    line_start = text.rfind("\n", 0, cstart) + 1
    line = text.count("\n", 0, cstart) + 1
    spec = text[cstart:cend].split("evo:", 1)[1].strip()
    try:
        name, kind, domain, value, start, end = _declaration(text[line_start:cstart], spec)
    except _Refused as e:
        raise _fail(line, str(e)) from None
    return Parameter(name, kind, domain, value, (line_start + start, line_start + end), line)


def _is_fixed(text: str, comment: tuple[int, int]) -> bool:
    """Whether the `# evo:` comment at `comment` marks its line's value as one the search leaves alone."""
    words = text[comment[0]:comment[1]].split("evo:", 1)[1].split()
    return bool(words) and words[0] == "fixed"


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> tuple[Parameter, ...]:
    if "evo:" not in text:
        return ()
    params: dict[str, Parameter] = {}
    for comment in lex(text).evo_comments:
        if _is_fixed(text, comment):
            continue
        p = _parse_declaration(text, comment)
        if p.name in params:
            raise _fail(p.line, f"{p.name} is already declared at line {params[p.name].line}")
        params[p.name] = p
    return tuple(params.values())


def parse_parameters(text: str) -> list[Parameter]:
    """The parameters `text` declares, in source order.

    Raises `OperatorError` naming the line of a malformed declaration (not a one-line
    module-level assignment of a literal, an unreadable spec, a value outside its domain).
    """
    return list(_parse_cached(text))


def _declares(parent: Program) -> bool:
    """Whether `parent`'s main file declares a parameter, or tries to (a malformed declaration)."""
    try:
        return bool(_parse_cached(source_text(parent.source)))
    except OperatorError:
        return True


def _format_param_float(x: float, lo: float, hi: float) -> str:
    """`x` to a ten-thousandth of its range, trailing zeros dropped (`0.0142`, not `0.0141683`)."""
    decimals = max(1, math.ceil(-math.log10((hi - lo) * 1e-4)))
    s = f"{x:.{decimals}f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _value_text(param: Parameter, value: object, old_text: str) -> str:
    """How `value` is written in place of `old_text` (short floats, the author's quote style)."""
    if param.kind == "float":
        x = float(value)  # type: ignore[arg-type]
        new = _format_param_float(x, *param.domain)
        # Rounding for display must not step over a bound; the exact repr cannot.
        return new if param.contains(float(new)) else repr(x)
    if param.kind == "int":
        return str(value)
    s = repr(value)
    if isinstance(value, str) and old_text.startswith('"') and s.startswith("'") and '"' not in value:
        s = '"' + s[1:-1].replace("\\'", "'") + '"'
    return s


def _differs(param: Parameter, value: object) -> bool:
    """Whether writing `value` changes the parameter (as written, for floats)."""
    if param.kind == "float":
        return float(_value_text(param, value, "")) != param.value
    return not (type(value) is type(param.value) and value == param.value)


def write_parameters(text: str, values: dict[str, object]) -> str:
    """`text` with the named parameters set to `values`; everything else kept byte for byte.

    Raises `OperatorError` for a name `text` does not declare or a value outside its domain.
    """
    params = {p.name: p for p in _parse_cached(text)}
    edits: list[tuple[int, int, str]] = []
    for name, value in values.items():
        p = params.get(name)
        if p is None:
            known = ", ".join(params) or "none"
            raise OperatorError(f"no parameter {name!r} is declared (declared: {known})")
        if p.kind == "float" and type(value) is int:
            value = float(value)
        if not p.contains(value):
            raise OperatorError(f"{value!r} is outside the domain of {name} (line {p.line}): {p.domain}")
        start, end = p.span
        edits.append((start, end, _value_text(p, value, text[start:end])))
    pieces: list[str] = []
    cursor = 0
    for start, end, new in sorted(edits):
        pieces += [text[cursor:start], new]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


# --- DEAP, deterministically ------------------------------------------------------------------


def _seeded(fn: Callable[..., Any], rnd: random.Random) -> Callable[..., Any]:
    """DEAP's `fn` with its module-global `random` rebound to `rnd` (DEAP's code, our draws)."""
    g = dict(fn.__globals__)
    g["random"] = rnd
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


def _local_random(rng: np.random.Generator) -> random.Random:
    """A private stdlib generator drawn from the request's numpy one (so: deterministic)."""
    return random.Random(int(rng.integers(2**63)))


def _meta(moved: Sequence[tuple[Parameter, object]], text: str) -> list[dict[str, object]]:
    """What changed, for `Proposal.meta`: name, line, old text, new text."""
    out: list[dict[str, object]] = []
    for p, v in moved:
        old = text[p.span[0] : p.span[1]]
        out.append({"name": p.name, "line": p.line, "old": old, "new": _value_text(p, v, old)})
    return out


# --- the one-parent operators' ends: read the parent's parameters, write the child ------------


def parent_parameters(request: ProposalRequest, operator: str,
                      purpose: str) -> tuple[str, tuple[Parameter, ...]]:
    """The first parent's main text and its declared parameters; an `OperatorError` (`purpose` says what
    the parameters were wanted for) when it declares none."""
    (text,) = parent_texts(request, 1, operator)
    params = _parse_cached(text)
    if not params:
        raise OperatorError(f"the parent declares no `# evo:` parameters to {purpose}")
    return text, params


def parameters_child(request: ProposalRequest, operator: str, text: str,
                     moved: Sequence[tuple[Parameter, object]], **meta: object) -> Proposal:
    """The first parent with the `moved` values written into `text`, as `operator`'s proposal; its
    `meta["changed"]` says what changed, and `meta` adds to it."""
    child = write_parameters(text, {p.name: v for p, v in moved})
    parent = request.parents[0]
    return Proposal(source=with_main_text(parent.source, child), parents=(parent.id,), operator=operator,
                    meta={"changed": _meta(moved, text), **meta})


class ParamMutation:
    """Mutate each declared parameter with probability `indpb` (at least one changes).

    Floats: DEAP's bounded polynomial mutation (`eta` large = small steps). Ints: the same on
    the real interval, rounded; a draw that rounds back to the old value takes one step in its
    direction instead, so a chosen int always moves. Choices: another option, uniformly.
    """

    name = "params"
    arity = 1
    checks_syntax = True  # a parseable parent gives a parseable child: the engine need not parse it
    ATTEMPTS = 8

    def __init__(self, indpb: float = 0.5, eta: float = 20.0) -> None:
        if not 0 < indpb <= 1:
            raise ValueError(f"indpb must be in (0, 1], got {indpb}")
        self.indpb = indpb
        self.eta = eta

    def __repr__(self) -> str:
        return f"ParamMutation(indpb={self.indpb!r}, eta={self.eta!r})"

    def _mutate(self, params: Sequence[Parameter], rnd: random.Random) -> list[object]:
        chosen = [rnd.random() < self.indpb for _ in params]
        if not any(chosen):
            chosen[rnd.randrange(len(params))] = True
        values: list[object] = [p.value for p in params]
        numeric = [i for i, p in enumerate(params) if chosen[i] and p.kind != "choice"]
        if numeric:
            xs = [float(params[i].value) for i in numeric]
            lows = [float(params[i].domain[0]) for i in numeric]
            highs = [float(params[i].domain[1]) for i in numeric]
            (xs,) = _seeded(tools.mutPolynomialBounded, rnd)(xs, self.eta, lows, highs, 1.0)
            for i, x in zip(numeric, xs, strict=True):
                p = params[i]
                if p.kind == "float":
                    values[i] = x
                    continue
                lo, hi = p.domain
                new = min(max(round(x), lo), hi)
                if new == p.value:  # too small a step to show on an int: take one whole step
                    up = x > p.value if x != p.value else rnd.random() < 0.5
                    new = p.value + 1 if (up and p.value < hi) or p.value == lo else p.value - 1
                values[i] = new
        for i, p in enumerate(params):
            if chosen[i] and p.kind == "choice":
                values[i] = rnd.choice([c for c in p.domain if _differs(p, c)])
        return values

    def applicable(self, parents: Sequence[Program]) -> bool:
        """Whether the parent declares a parameter (a malformed declaration counts: the call names it)."""
        return _declares(parents[0])

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        text, params = parent_parameters(request, self.name, "mutate")
        rnd = _local_random(request.rng)
        for _ in range(self.ATTEMPTS):  # a float pinned at a bound can draw itself again
            values = self._mutate(params, rnd)
            moved = [(p, v) for p, v in zip(params, values, strict=True) if _differs(p, v)]
            if moved:
                break
        else:
            raise OperatorError(f"no parameter changed in {self.ATTEMPTS} attempts (all pinned at bounds?)")
        return [parameters_child(request, self.name, text, moved)]


class ParamCrossover:
    """Uniform crossover (DEAP `cxUniform`) of the parameters both parents declare alike.

    Shared means the same name and kind, with parent 1's value legal in parent 0's domain.
    The child is parent 0's text with some of parent 1's values; at least one differs.
    """

    name = "params_crossover"
    arity = 2
    checks_syntax = True  # a parseable parent gives a parseable child: the engine need not parse it
    ATTEMPTS = 8

    def __init__(self, indpb: float = 0.5) -> None:
        if not 0 < indpb <= 1:
            raise ValueError(f"indpb must be in (0, 1], got {indpb}")
        self.indpb = indpb

    def __repr__(self) -> str:
        return f"ParamCrossover(indpb={self.indpb!r})"

    def applicable(self, parents: Sequence[Program]) -> bool:
        """Whether the two parents differ and both declare parameters (no parse of the shared ones:
        a call between parents that share none is answered by an `OperatorError`)."""
        text0, text1 = (source_text(p.source) for p in parents)
        return text0 != text1 and _declares(parents[0]) and _declares(parents[1])

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        text0, text1 = parent_texts(request, self.arity, self.name)
        try:
            params0 = _parse_cached(text0)
            by_name1 = {p.name: p for p in _parse_cached(text1)}
        except OperatorError as e:
            raise OperatorError(f"a parent's parameters cannot be read: {e}") from None
        shared = [
            (p, by_name1[p.name])
            for p in params0
            if p.name in by_name1 and by_name1[p.name].kind == p.kind and p.contains(by_name1[p.name].value)
        ]
        if not shared:
            raise OperatorError("the parents share no parameter (same name and kind)")
        differ = [(p0, p1) for p0, p1 in shared if _differs(p0, p1.value)]
        if not differ:
            raise OperatorError("the parents agree on every shared parameter; the child would be parent 0")
        cx = _seeded(tools.cxUniform, _local_random(request.rng))
        n = len(differ)
        for _ in range(self.ATTEMPTS):
            # Cross markers, not values: after the swap, a 1 in `mine` is a gene from parent 1.
            mine, theirs = [0] * n, [1] * n
            cx(mine, theirs, self.indpb)
            taken = [i for i in range(n) if mine[i]]
            if taken and (len(taken) < n or n == 1):  # some of parent 1, yet not all of it
                break
        else:
            taken = [int(request.rng.integers(n))]
        moved = [(differ[i][0], differ[i][1].value) for i in taken]
        child = write_parameters(text0, {p.name: v for p, v in moved})
        if child in (text0, text1):
            raise OperatorError("the child would be identical to a parent")
        parent0, parent1 = request.parents[0], request.parents[1]
        return [
            Proposal(
                source=with_main_text(parent0.source, child),
                parents=(parent0.id, parent1.id),
                operator=self.name,
                meta={"changed": _meta(moved, text0), "from_parent1": [p.name for p, _ in moved]},
            )
        ]
