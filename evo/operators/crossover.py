"""Function-level crossover: parent 0 with some top-level definitions taken from parent 1.

`FunctionCrossover` pairs the top-level `def`, `async def` and `class` statements the two
parents both define once under the same name, and among those whose code differs (comments,
blank lines and indentation-free whitespace do not count) swaps each with probability `swap_prob`, at
least one. The swap is a splice of whole lines, decorators included, so everything else in
parent 0 keeps its text.

A definition taken from parent 1 may use names parent 0 never binds (a helper function, a
constant, an import). Those of parent 1's top-level definitions, single-name assignments and
imports are carried along, transitively, and inserted just before the first swapped definition,
so that the child does not die of a `NameError`. Comments above a definition stay with parent 0.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from evo.ast_parse import parse_source
from evo.errors import OperatorError
from evo.operators.base import Proposal, ProposalRequest
from evo.operators.constants import parent_texts, with_main_text
from evo.program import Program

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True, eq=False)
class _Stmt:
    """A top-level statement of a parent, with its whole-line span (1-based, inclusive)."""

    node: ast.stmt
    first: int  # first line, decorators included
    last: int
    lines: str  # its text, whole lines, ending in a newline


@dataclass(frozen=True, eq=False)
class _Module:
    """What crossover needs to know of one parent, computed once per text."""

    lines: tuple[str, ...]
    defs: dict[str, _Stmt]  # top-level def/class defined exactly once, by name
    providers: dict[str, _Stmt]  # statements that bind a top-level name (defs, assigns, imports)
    bound: frozenset[str]  # every name bound at top level
    keys: dict[str, str] = field(default_factory=dict)  # comment-free code of defs, filled on demand
    free: dict[int, frozenset[str]] = field(default_factory=dict)  # free names by id(node), on demand

    def code_key(self, name: str) -> str:
        """The definition's code without comments and blank lines: equal keys, equal code."""
        if name not in self.keys:
            self.keys[name] = _code_key(self.defs[name].lines)
        return self.keys[name]

    def free_names(self, node: ast.stmt) -> frozenset[str]:
        """`_free_names` of one of this module's statements, walked once (a walk costs ~0.5 ms)."""
        names = self.free.get(id(node))
        if names is None:
            names = self.free[id(node)] = frozenset(_free_names(node))
        return names


def _code_key(segment: str) -> str:
    """Lines stripped of comments and surrounding space, blank ones dropped.

    A string-free stand-in for comparing ASTs (ast.dump cost ~1 ms a definition): a `#` after a
    quote is left alone, so two definitions that differ only there count as different (harmless:
    the near-duplicate screen then catches the child).
    """
    out = []
    for line in segment.splitlines():
        code = line.strip()
        hash_at = code.find("#")
        if hash_at >= 0 and "'" not in code[:hash_at] and '"' not in code[:hash_at]:
            code = code[:hash_at].rstrip()
        if code:
            out.append(code)
    return "\n".join(out)


def _bound_names(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds (not those bound inside a function or class)."""
    if isinstance(node, _DEFS):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    names: set[str] = set()
    stack: list[ast.AST] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, _DEFS):
            names.add(n.name)  # defined inside an `if` or `try` at top level
        elif not isinstance(n, ast.Lambda):
            stack.extend(ast.iter_child_nodes(n))
    return names


def _free_names(node: ast.stmt) -> set[str]:
    """Names a definition reads but does not bind itself (a rough, scope-blind estimate)."""
    loaded: set[str] = set()
    stored: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else stored).add(n.id)
        elif isinstance(n, ast.arg):
            stored.add(n.arg)
    return loaded - stored


def _span(node: ast.stmt) -> tuple[int, int]:
    decorators = getattr(node, "decorator_list", [])
    first = min([node.lineno] + [d.lineno for d in decorators])  # `@` shares its expr's line
    return first, node.end_lineno or node.lineno


@lru_cache(maxsize=8192)  # parents are elites, which churn: ~1,000 was a 45% miss rate at 10k stored
def _analyse(text: str) -> _Module:
    try:
        tree = parse_source(text)
    except SyntaxError as e:
        raise OperatorError(f"a parent does not parse: {e.msg} (line {e.lineno})") from None
    lines = tuple(text.splitlines(keepends=True))
    body = tree.body
    # A statement that shares a line with a neighbour (`import a; x = 1`) cannot be cut out
    # by whole lines; leave it alone.
    shared: set[int] = set()
    for prev, nxt in zip(body, body[1:], strict=False):
        if (prev.end_lineno or prev.lineno) >= _span(nxt)[0]:
            shared.update((id(prev), id(nxt)))

    counts: dict[str, int] = {}
    stmts: list[tuple[_Stmt, set[str]]] = []
    for node in body:
        names = _bound_names(node)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        if id(node) in shared:
            continue
        first, last = _span(node)
        seg = "".join(lines[first - 1 : last])
        stmts.append((_Stmt(node, first, last, seg if seg.endswith("\n") else seg + "\n"), names))

    defs: dict[str, _Stmt] = {}
    providers: dict[str, _Stmt] = {}
    for stmt, names in stmts:
        node = stmt.node
        once = [n for n in names if counts[n] == 1]
        if isinstance(node, _DEFS) and once:
            defs[node.name] = stmt
        carriable = (
            isinstance(node, (*_DEFS, ast.Import))
            or (isinstance(node, ast.ImportFrom) and node.module != "__future__")  # must stay on top
            or (isinstance(node, ast.Assign | ast.AnnAssign) and len(names) == 1)
        )
        if carriable:
            for name in once:
                providers[name] = stmt
    return _Module(lines, defs, providers, frozenset(counts))


def _kind(node: ast.stmt) -> str:
    return "class" if isinstance(node, ast.ClassDef) else "def"


def _differ(m0: _Module, m1: _Module, name: str) -> bool:
    """Whether both define `name` alike in kind but differently as code (comments do not count)."""
    a, b = m0.defs[name], m1.defs[name]
    if a.lines == b.lines:  # the common case, and far cheaper than dumping the trees
        return False
    return _kind(a.node) == _kind(b.node) and m0.code_key(name) != m1.code_key(name)


def _swappable(m0: _Module, m1: _Module) -> list[str]:
    """The definitions both parents have, alike in kind but different as code, in parent 0's order."""
    return [name for name in m0.defs if name in m1.defs and _differ(m0, m1, name)]


class FunctionCrossover:
    """Swap top-level definitions of the same name from parent 1 into parent 0."""

    name = "crossover"
    arity = 2
    checks_syntax = True  # a parseable parent gives a parseable child: the engine need not parse it

    def __init__(self, swap_prob: float = 0.5) -> None:
        if not 0 < swap_prob <= 1:
            raise ValueError(f"swap_prob must be in (0, 1], got {swap_prob}")
        self.swap_prob = swap_prob

    def __repr__(self) -> str:
        return f"FunctionCrossover(swap_prob={self.swap_prob!r})"

    def applicable(self, parents: Sequence[Program]) -> bool:
        """Whether the parents define a function or class of one name differently (a parent with
        itself never does). The analysis is cached per text, so the call that follows reuses it."""
        text0, text1 = parents[0].text, parents[1].text
        if text0 == text1:
            return False
        try:
            return bool(_swappable(_analyse(text0), _analyse(text1)))
        except OperatorError:
            return True  # a parent that does not parse: the call reports it

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        text0, text1 = parent_texts(request, self.arity, self.name)
        m0, m1 = _analyse(text0), _analyse(text1)
        candidates = _swappable(m0, m1)
        if not candidates:
            shared = [n for n in m0.defs if n in m1.defs]
            why = "all of them are identical" if shared else "they define none under the same name"
            raise OperatorError(f"no top-level function or class to swap between the parents: {why}")

        rng = request.rng
        chosen = [n for n in candidates if rng.random() < self.swap_prob]
        if not chosen:
            chosen = [candidates[int(rng.integers(len(candidates)))]]
        child, added = _build(m0, m1, chosen)
        if child == text1 and len(chosen) > 1:  # took everything that differs: keep one back
            chosen.pop(int(rng.integers(len(chosen))))
            child, added = _build(m0, m1, chosen)
        if child in (text0, text1):
            raise OperatorError(
                f"the child would be identical to a parent: the parents differ only in {chosen}"
            )
        # No parse of the child: it is whole top-level statements of two parsed modules, spliced at
        # column 0 between whole statements, which always parses (a parse cost ~1 ms a child).
        parent0, parent1 = request.parents[0], request.parents[1]
        return [
            Proposal(
                source=with_main_text(parent0.source, child),
                parents=(parent0.id, parent1.id),
                operator=self.name,
                meta={"swapped": chosen, "added": added},
            )
        ]


def _carried(m0: _Module, m1: _Module, chosen: list[str]) -> list[_Stmt]:
    """Parent 1's statements that the swapped-in definitions need and parent 0 lacks."""
    needed: list[_Stmt] = []
    seen: set[int] = set()
    todo = [m1.defs[name].node for name in chosen]
    while todo:
        for name in sorted(m1.free_names(todo.pop())):
            stmt = m1.providers.get(name)
            if stmt is None or name in m0.bound or id(stmt) in seen:
                continue
            seen.add(id(stmt))
            needed.append(stmt)
            todo.append(stmt.node)
    return sorted(needed, key=lambda s: s.first)  # parent 1's order


def _build(m0: _Module, m1: _Module, chosen: list[str]) -> tuple[str, list[str]]:
    """Parent 0's lines with the chosen definitions replaced, plus what they need."""
    carried = _carried(m0, m1, chosen)
    replace = {m0.defs[name].first: (m0.defs[name].last, m1.defs[name].lines) for name in chosen}
    insert_at = min(replace)
    out: list[str] = []
    i = 1
    n = len(m0.lines)
    while i <= n:
        if i == insert_at and carried:
            for stmt in carried:
                out.append(stmt.lines)
                if isinstance(stmt.node, _DEFS) or stmt is carried[-1]:
                    out.append("\n\n")  # two blank lines around top-level blocks, as PEP 8 has it
        if i in replace:
            last, new = replace[i]
            out.append(new)
            i = last + 1
        else:
            out.append(m0.lines[i - 1])
            i += 1
    added = [name for s in carried for name in sorted(_bound_names(s.node))]
    return "".join(out), added
