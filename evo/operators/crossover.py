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

A parent is analysed in pieces: its text is cut before each line that may start a top-level
statement, and each piece is parsed once for every text that holds it (a child repeats all but a
piece or two of its parent). A cut inside a statement leaves a piece that does not parse (an open
bracket, string or line continuation), and the whole text is then parsed instead, so both ways
find the same statements. No parse tree is kept: trees are a thousand objects a parent, which the
garbage collector would walk again and again.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from evo.ast_parse import parse_source
from evo.errors import OperatorError
from evo.operators.base import Proposal, ProposalRequest
from evo.operators.constants import parent_texts, with_main_text
from evo.program import Program

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# Where `str.splitlines` and the parser count lines differently (or the parser refuses the text):
# a text with any of these is parsed whole.
_ODD = re.compile("[\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Lines that may start a top-level statement: a name or keyword (not a clause that continues the
# statement above) or a decorator. Any other line stays in the piece above it.
_STARTS = re.compile(r"^(?:@|(?!(?:else|elif|except|finally)\b)[^\W\d])", re.M)
_PIECES_MAX = 16_384  # distinct pieces remembered (a few per elite; ~1 new one per child)
_PIECES_LOCK = threading.Lock()
_GROW_MAX = 32  # pieces joined before the whole text is parsed instead


class _Shape:
    """One top-level statement as its piece of text has it: lines counted from the piece's first."""

    __slots__ = ("first", "last", "kind", "names", "carriable", "lines", "source", "index", "free")

    def __init__(self, node: ast.stmt, lines: Sequence[str], source: str, index: int) -> None:
        self.first, self.last = _span(node)
        self.kind = _kind(node) if isinstance(node, _DEFS) else ""
        self.names = frozenset(_bound_names(node))
        self.carriable = (  # a statement that may be carried into another module for a name it binds
            isinstance(node, (*_DEFS, ast.Import))
            or (isinstance(node, ast.ImportFrom) and node.module != "__future__")  # must stay on top
            or (isinstance(node, ast.Assign | ast.AnnAssign) and len(self.names) == 1)
        )
        seg = "".join(lines[self.first - 1 : self.last])
        self.lines = seg if seg.endswith("\n") else seg + "\n"
        self.source, self.index = source, index  # the text parsed, and the statement's place in it
        self.free: frozenset[str] | None = None  # filled on demand

    def free_names(self) -> frozenset[str]:
        """`_free_names` of the statement, from its text parsed again (once per shape)."""
        if self.free is None:
            self.free = frozenset(_free_names(parse_source(self.source).body[self.index]))
        return self.free


class _Stmt:
    """A top-level statement of a parent: its shape, at its whole-line span (1-based, inclusive)."""

    __slots__ = ("shape", "first", "last")

    def __init__(self, shape: _Shape, offset: int) -> None:
        self.shape = shape
        self.first = shape.first + offset  # first line, decorators included
        self.last = shape.last + offset

    @property
    def lines(self) -> str:
        """Its text, whole lines, ending in a newline."""
        return self.shape.lines


@dataclass(frozen=True, eq=False)
class _Module:
    """What crossover needs to know of one parent, computed once per text."""

    lines: tuple[str, ...]
    defs: dict[str, _Stmt]  # top-level def/class defined exactly once, by name
    providers: dict[str, _Stmt]  # statements that bind a top-level name (defs, assigns, imports)
    bound: frozenset[str]  # every name bound at top level
    keys: dict[str, str] = field(default_factory=dict)  # comment-free code of defs, filled on demand

    def code_key(self, name: str) -> str:
        """The definition's code without comments and blank lines: equal keys, equal code."""
        if name not in self.keys:
            self.keys[name] = _code_key(self.defs[name].lines)
        return self.keys[name]


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


_pieces: dict[str, tuple[_Shape, ...] | None] = {}  # piece of text -> its statements (None: no parse)


def _piece_shapes(piece: str) -> tuple[_Shape, ...] | None:
    """The statements of one piece of text, or None when it does not parse on its own."""
    if piece in _pieces:
        return _pieces[piece]
    shapes: tuple[_Shape, ...] | None
    try:
        body = parse_source(piece).body
    except SyntaxError:
        shapes = None
    else:
        lines = piece.splitlines(keepends=True)
        shapes = tuple(_Shape(node, lines, piece, i) for i, node in enumerate(body))
    with _PIECES_LOCK:
        if len(_pieces) >= _PIECES_MAX:
            del _pieces[next(iter(_pieces))]  # the oldest
        _pieces[piece] = shapes
    return shapes


def _in_pieces(text: str) -> list[tuple[_Shape, int]] | None:
    """The top-level statements of `text` with their line offsets, piece by piece; None when a
    piece does not parse alone (a cut inside a statement, or a text that does not parse)."""
    cuts = [0]
    decorated = False
    for m in _STARTS.finditer(text):
        at = m.start()
        if at and not decorated:
            cuts.append(at)
        decorated = text[at] == "@"  # the statement under a decorator stays with it
    if cuts[-1] < len(text):
        cuts.append(len(text))
    located: list[tuple[_Shape, int]] = []
    offset = 0
    i, n = 0, len(cuts) - 1
    while i < n:
        j = i + 1
        piece = text[cuts[i] : cuts[j]]
        shapes = _piece_shapes(piece)
        while shapes is None:  # cut inside a statement (a docstring's lines): take the next piece too
            j += 1
            if j > n or j - i > _GROW_MAX:
                return None
            piece = text[cuts[i] : cuts[j]]
            shapes = _piece_shapes(piece)
        located.extend((shape, offset) for shape in shapes)
        offset += piece.count("\n")
        i = j
    return located


def _whole(text: str) -> list[tuple[_Shape, int]]:
    """The top-level statements of `text`, from one parse of all of it."""
    try:
        tree = parse_source(text)
    except SyntaxError as e:
        raise OperatorError(f"a parent does not parse: {e.msg} (line {e.lineno})") from None
    lines = text.splitlines(keepends=True)
    return [(_Shape(node, lines, text, i), 0) for i, node in enumerate(tree.body)]


@lru_cache(maxsize=8192)  # parents are elites, which churn: ~1,000 was a 45% miss rate at 10k stored
def _analyse(text: str) -> _Module:
    located = None if _ODD.search(text) else _in_pieces(text)
    if located is None:
        located = _whole(text)
    # A statement that shares a line with a neighbour (`import a; x = 1`) cannot be cut out
    # by whole lines; leave it alone.
    shared: set[int] = set()
    for i in range(len(located) - 1):
        (prev, p_off), (nxt, n_off) = located[i], located[i + 1]
        if prev.last + p_off >= nxt.first + n_off:
            shared.update((i, i + 1))

    counts: dict[str, int] = {}
    stmts: list[_Stmt] = []
    for i, (shape, offset) in enumerate(located):
        for name in shape.names:
            counts[name] = counts.get(name, 0) + 1
        if i not in shared:
            stmts.append(_Stmt(shape, offset))

    defs: dict[str, _Stmt] = {}
    providers: dict[str, _Stmt] = {}
    for stmt in stmts:
        shape = stmt.shape
        once = [n for n in shape.names if counts[n] == 1]
        if shape.kind and once:
            defs[once[0]] = stmt  # a definition binds its one name
        if shape.carriable:
            for name in once:
                providers[name] = stmt
    return _Module(tuple(text.splitlines(keepends=True)), defs, providers, frozenset(counts))


def _kind(node: ast.stmt) -> str:
    return "class" if isinstance(node, ast.ClassDef) else "def"


def _differ(m0: _Module, m1: _Module, name: str) -> bool:
    """Whether both define `name` alike in kind but differently as code (comments do not count)."""
    a, b = m0.defs[name], m1.defs[name]
    if a.lines == b.lines:  # the common case, and far cheaper than dumping the trees
        return False
    return a.shape.kind == b.shape.kind and m0.code_key(name) != m1.code_key(name)


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
    todo = [m1.defs[name] for name in chosen]
    while todo:
        for name in sorted(todo.pop().shape.free_names()):
            stmt = m1.providers.get(name)
            if stmt is None or name in m0.bound or id(stmt) in seen:
                continue
            seen.add(id(stmt))
            needed.append(stmt)
            todo.append(stmt)
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
                if stmt.shape.kind or stmt is carried[-1]:
                    out.append("\n\n")  # two blank lines around top-level blocks, as PEP 8 has it
        if i in replace:
            last, new = replace[i]
            out.append(new)
            i = last + 1
        else:
            out.append(m0.lines[i - 1])
            i += 1
    added = [name for s in carried for name in sorted(s.shape.names)]
    return "".join(out), added
