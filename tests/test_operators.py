"""The operators that need no LLM: constants, params, params_crossover, crossover; the registry."""

from __future__ import annotations

import ast
import asyncio
import random
import re

import numpy as np
import pytest

from evo.errors import EvoError, OperatorError
from evo.operators import (
    DEFAULT_WEIGHTS,
    OPERATORS,
    ConstantMutation,
    FunctionCrossover,
    Operator,
    ParamCrossover,
    ParamMutation,
    Proposal,
    ProposalRequest,
    build_operators,
)
from evo.operators.constants import find_literals
from evo.operators.params import parse_parameters, write_parameters
from evo.program import MAIN_FILE, Program

PROGRAM = '''\
"""Circle packing in a unit square: place N circles, maximise the sum of radii.

Tunables are declared like `ROWS = 5  # evo: int(3, 8)` (this line is a docstring, not one).
"""

import math

import numpy as np

N = 26             # evo: int(20, 30)
JITTER = 0.02      # evo: float(0.0, 0.1)
PATTERN = "hex"    # evo: ["grid", "hex", "spiral"]

MARGIN = 1e-3  # keep circles off the walls, 2.5 radii apart
STEP = -0.25


def ring(k: int, radius: float = 0.35) -> np.ndarray:
    """k points on a ring around the centre."""
    angles = np.linspace(0.0, 2 * math.pi, k, endpoint=False)
    return 0.5 + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def hex_grid(n: int) -> np.ndarray:
    rows = int(math.ceil(math.sqrt(n)))
    pts = []
    for r in range(rows):
        for c in range(rows):
            x = (c + 0.5 * (r % 2) + 0.5) / (rows + 0.5)
            y = (r + 0.5) * math.sqrt(3) / 2 / rows
            pts.append((x, y))
    return np.array(pts[:n])


def initial_centres(n: int, rng: np.random.Generator) -> np.ndarray:
    if PATTERN == "grid":
        side = int(math.ceil(math.sqrt(n)))
        g = (np.arange(side) + 0.5) / side
        pts = np.array([(a, b) for a in g for b in g])[:n]
    elif PATTERN == "hex":
        pts = hex_grid(n)
    else:
        pts = np.concatenate([ring(8, 0.38), ring(n - 9, 0.2), [[0.5, 0.5]]])
    pts = pts + rng.normal(0.0, JITTER, pts.shape)
    return np.clip(pts, MARGIN, 1.0 - MARGIN)


def radii(centres: np.ndarray, iters: int = 200, lr: float = 0.05) -> np.ndarray:
    """Grow radii until they touch the walls or each other."""
    wall = np.minimum(centres, 1.0 - centres).min(axis=1)
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(centres)) * 10.0
    r = np.full(len(centres), 0.01)
    for _ in range(iters):
        limit = np.minimum(wall, (d - r[None, :]).min(axis=1))
        r = np.maximum(0.0, r + lr * (limit - r))
    return r * 0.999


def solve(seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = initial_centres(N, rng)
    return c, radii(c)
'''

# Every way a number can be written, and the places one must not be found.
TRICKY = '''\
a = 1_000 + 0x1F - 0b101 + 0o17
b = -2.5e-3 * (3 - -4) ** -2
c = 1j + 2.5J + 1e999
d = "12 # not a comment", 'it\\'s 3', b"7", r"\\d8"
e = f"{a + 7} and 8"
f = """multi
line 42 'quoted' "again"
"""
g = True or False, None, x1, y_2
h = data[-1], not -3, a-1, a -1.5, -2 ** 2
def k(p=.5, q=5., r=-0.0):
    return -6  # a trailing 9 in a comment
m = [  # a list that opens with a negative number
    -7, "ü", 8,
]
L = 7  # evo: int(1, 9)
'''


def run(op: Operator, *parents: str | Program, seed: int = 0) -> Proposal:
    programs = [p if isinstance(p, Program) else Program(source=p) for p in parents]
    proposals = asyncio.run(op.propose(ProposalRequest(programs, rng=np.random.default_rng(seed))))
    assert len(proposals) == 1
    return proposals[0]


def literal_texts(text: str) -> list[tuple[str, int | float]]:
    return [(text[lit.start : lit.end], lit.value) for lit in find_literals(text)]


def ast_numbers(text: str) -> list[tuple[int, int | float]]:
    """(offset of the digits, signed value) of every int/float constant outside f-strings."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    in_fstring = {id(n) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for n in ast.walk(j)}
    negated = {  # `-2 ** 2` is `-(2 ** 2)`: the 2 is not negated, the ast agrees
        id(n.operand) for n in ast.walk(tree) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
    }
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and type(n.value) in (int, float) and id(n) not in in_fstring:
            value = -n.value if id(n) in negated else n.value
            col = len(lines[n.lineno - 1].encode()[: n.col_offset].decode())  # ast counts bytes
            out.append((starts[n.lineno - 1] + col, value))
    return sorted(out)


def outside_literals(text: str) -> list[str]:
    """The text between the numeric literals: what a constant mutation must not touch."""
    pieces, cursor = [], 0
    for lit in find_literals(text):
        pieces.append(text[cursor : lit.start])
        cursor = lit.end
    return [*pieces, text[cursor:]]


# --- constants --------------------------------------------------------------------------------


def test_literals_are_found_with_exact_spans() -> None:
    assert literal_texts(TRICKY) == [
        ("1_000", 1000), ("0x1F", 31), ("0b101", 5), ("0o17", 15),
        ("-2.5e-3", -0.0025), ("3", 3), ("-4", -4), ("-2", -2),
        ("-1", -1), ("-3", -3), ("1", 1), ("1.5", 1.5), ("2", 2), ("2", 2),
        (".5", 0.5), ("5.", 5.0), ("-0.0", -0.0),
        ("-6", -6), ("-7", -7), ("8", 8),
    ]  # fmt: skip


def test_literals_agree_with_the_ast() -> None:
    for text in (PROGRAM, TRICKY):
        ours = sorted((lit.digits, lit.value) for lit in find_literals(text))
        declared = {i + 1 for i, line in enumerate(text.splitlines()) if "# evo:" in line}
        theirs = [
            (pos, v)
            for pos, v in ast_numbers(text)
            if text.count("\n", 0, pos) + 1 not in declared and abs(v) != float("inf")
        ]
        assert ours == theirs


def test_constant_children_parse_and_change_only_literals() -> None:
    op = ConstantMutation()
    parent_literals = find_literals(PROGRAM)
    for seed in range(200):
        child = run(op, PROGRAM, seed=seed)
        text = child.source
        assert isinstance(text, str) and text != PROGRAM
        ast.parse(text)
        assert outside_literals(text) == outside_literals(PROGRAM)  # comments, layout, evo lines
        changed = child.meta["changed"]
        assert isinstance(changed, list) and 1 <= len(changed) <= 3
        after = find_literals(text)
        moved = [(a, b) for a, b in zip(parent_literals, after, strict=True) if a.value != b.value]
        assert len(moved) == len(changed)
        for (old, new), record in zip(moved, changed, strict=True):
            assert record == {"line": old.line, "old": PROGRAM[old.start : old.end],
                              "new": text[new.start : new.end]}  # fmt: skip
            assert old.is_float == new.is_float  # `1.0` never turns into `1`
            if old.value != 0:  # a sign is never flipped, though a 1 may become a 0
                assert np.sign(new.value) in (np.sign(old.value), 0)


def test_constant_mutation_is_deterministic_given_the_rng() -> None:
    op = ConstantMutation()
    assert run(op, PROGRAM, seed=7).source == run(op, PROGRAM, seed=7).source
    assert len({run(op, PROGRAM, seed=s).source for s in range(6)}) > 1


def test_constant_mutation_keeps_other_files_of_a_multi_file_program() -> None:
    source = {MAIN_FILE: "x = 0.5\n", "helper.py": "y = 2.5\n"}
    child = run(ConstantMutation(), Program(source=source))
    assert isinstance(child.source, dict)
    assert child.source["helper.py"] == "y = 2.5\n" and child.source[MAIN_FILE] != "x = 0.5\n"


def test_constant_mutation_explains_what_it_cannot_do() -> None:
    with pytest.raises(OperatorError, match="no numeric literals"):
        run(ConstantMutation(), "name = 'abc'  # 12\nL = 3  # evo: int(1, 5)\n")
    with pytest.raises(OperatorError, match="unterminated string at line 2"):
        run(ConstantMutation(), "x = 1\ny = 'abc\n")
    with pytest.raises(OperatorError, match="needs 1 parent"):
        asyncio.run(ConstantMutation().propose(ProposalRequest([])))


# --- params -----------------------------------------------------------------------------------


def test_parameters_of_all_three_kinds_are_parsed() -> None:
    params = parse_parameters(PROGRAM)
    assert [(p.name, p.kind, p.domain, p.value, p.line) for p in params] == [
        ("N", "int", (20, 30), 26, 10),
        ("JITTER", "float", (0.0, 0.1), 0.02, 11),
        ("PATTERN", "choice", ("grid", "hex", "spiral"), "hex", 12),
    ]
    assert [PROGRAM[p.span[0] : p.span[1]] for p in params] == ["26", "0.02", '"hex"']
    (p,) = parse_parameters("LR: float = -1  # evo: float(-2, 0)  # learning rate, as a log\n")
    assert (p.kind, p.domain, p.value, p.span) == ("float", (-2.0, 0.0), -1.0, (12, 14))


@pytest.mark.parametrize(
    ("declaration", "reason"),
    [
        ("    X = 5  # evo: int(3, 8)", "module level"),
        ("X = 5  # evo: int(3)", "unknown spec"),
        ("X = 5  # evo: int(3.0, 8)", "int bounds"),
        ("X = 5  # evo: int(8, 3)", "lo < hi"),
        ("X = 5  # evo: range(3, 8)", "unknown spec"),
        ("X = 5  # evo: int(3, ", "cannot read"),
        ("X = 9  # evo: int(3, 8)", "outside its domain"),
        ("X = 'dot'  # evo: ['grid', 'hex']", "outside its domain"),
        ("X = 5.5  # evo: int(3, 8)", "outside its domain"),
        ("X = True  # evo: int(0, 8)", "outside its domain"),
        ("X = 'a'  # evo: ['a']", "at least two"),
        ("X = f(5)  # evo: int(3, 8)", "must be a literal"),
        ("A, B = 1, 2  # evo: int(0, 3)", "one assignment to one name"),
        ("A = B = 1  # evo: int(0, 3)", "one assignment to one name"),
        ("X = (1 +  # evo: int(0, 3)", "fit on its line"),
        ("# evo: int(0, 3)", "must end the line of an assignment"),
        ("N = 4  # evo: int(1, 9)", "already declared at line 2"),
    ],
)
def test_malformed_declarations_name_their_line(declaration: str, reason: str) -> None:
    text = f'"""Doc."""\nN = 3  # evo: int(1, 9)\n\n{declaration}\nY = 1\n'
    with pytest.raises(OperatorError, match="line 4") as info:
        parse_parameters(text)
    assert reason in str(info.value)
    with pytest.raises(OperatorError, match="line 6"):  # a line read before (cached) still names its own place
        parse_parameters(text.replace("\n\n", "\n\n\n\n", 1))


def test_declarations_with_non_ascii_text() -> None:
    text = 'GRÜN = "ä"  # evo: ["ä", "ö"]\nΠ = 0.5  # evo: float(0, 1)\n'
    assert [(p.name, text[p.span[0] : p.span[1]]) for p in parse_parameters(text)] == [
        ("GRÜN", '"ä"'), ("Π", "0.5"),
    ]  # fmt: skip
    expected = text.replace("ä", "ö", 1).replace("0.5", "0.25")
    assert write_parameters(text, {"GRÜN": "ö", "Π": 0.25}) == expected


def test_a_fixed_number_is_neither_a_parameter_nor_a_literal_to_nudge() -> None:
    text = "N = 12  # evo: fixed (the task's size)\nK = 3  # evo: int(1, 5)\nX = 0.5\n"
    assert [p.name for p in parse_parameters(text)] == ["K"]
    assert [lit.value for lit in find_literals(text)] == [0.5]


def test_evo_inside_a_string_is_not_a_declaration() -> None:
    text = 'HELP = "write X = 5  # evo: int(3, 8)"\ns = """\n    # evo: nonsense\n"""\n'
    assert parse_parameters(text) == []


def test_write_parameters_splices_values_and_keeps_the_rest() -> None:
    text = write_parameters(PROGRAM, {"N": 21, "JITTER": 0.05, "PATTERN": "spiral"})
    assert [p.value for p in parse_parameters(text)] == [21, 0.05, "spiral"]
    assert 'PATTERN = "spiral"    # evo: ["grid", "hex", "spiral"]\n' in text  # quotes kept
    assert text.replace("21", "26", 1).replace("0.05", "0.02", 1).replace("spiral", "hex", 1) == PROGRAM
    assert write_parameters(PROGRAM, {"JITTER": 0}).count("JITTER = 0.0 ") == 1  # a float stays one
    with pytest.raises(OperatorError, match="no parameter 'ROWS'.*declared: N, JITTER, PATTERN"):
        write_parameters(PROGRAM, {"ROWS": 5})
    with pytest.raises(OperatorError, match="outside the domain of N"):
        write_parameters(PROGRAM, {"N": 31})


def test_param_mutation_stays_in_bounds_over_many_draws() -> None:
    op = ParamMutation()
    rng = np.random.default_rng(0)
    text = PROGRAM
    seen: dict[str, set[object]] = {"N": set(), "JITTER": set(), "PATTERN": set()}
    for _ in range(500):  # a random walk: each child is the next parent
        before = {p.name: p.value for p in parse_parameters(text)}
        child = asyncio.run(op.propose(ProposalRequest([Program(text)], rng=rng)))[0]
        assert isinstance(child.source, str)
        text = child.source
        params = parse_parameters(text)  # raises if a value left its domain
        assert all(p.contains(p.value) for p in params)
        after = {p.name: p.value for p in params}
        changed = {c["name"] for c in child.meta["changed"]}  # type: ignore[union-attr]
        assert changed and changed == {n for n in after if after[n] != before[n]}
        for name, value in after.items():
            seen[name].add(value)
    assert seen["PATTERN"] == {"grid", "hex", "spiral"}
    assert len(seen["N"]) >= 5 and len(seen["JITTER"]) >= 50


def test_param_mutation_is_deterministic_and_leaves_global_random_alone() -> None:
    state = random.getstate()
    op = ParamMutation()
    assert run(op, PROGRAM, seed=3).source == run(op, PROGRAM, seed=3).source
    assert len({run(op, PROGRAM, seed=s).source for s in range(6)}) > 1
    assert random.getstate() == state


def test_param_mutation_needs_parameters() -> None:
    with pytest.raises(OperatorError, match="no `# evo:` parameters"):
        run(ParamMutation(), "x = 1.5\n")


def test_param_crossover_takes_values_from_the_parents() -> None:
    other = write_parameters(PROGRAM, {"N": 22, "JITTER": 0.07, "PATTERN": "grid"})
    mine = {p.name: p.value for p in parse_parameters(PROGRAM)}
    theirs = {p.name: p.value for p in parse_parameters(other)}
    op = ParamCrossover()
    children = set()
    for seed in range(40):
        child = run(op, PROGRAM, other, seed=seed)
        assert isinstance(child.source, str)
        values = {p.name: p.value for p in parse_parameters(child.source)}
        assert all(values[n] in (mine[n], theirs[n]) for n in values)
        taken = {n for n in values if values[n] == theirs[n]}
        assert taken == set(child.meta["from_parent1"])  # type: ignore[arg-type]
        assert 0 < len(taken) < 3  # some of parent 1, never all of it (that would be parent 1)
        children.add(child.source)
    assert len(children) > 3
    assert run(op, PROGRAM, other, seed=5).source == run(op, PROGRAM, other, seed=5).source


def test_param_crossover_refuses_parents_with_nothing_to_exchange() -> None:
    op = ParamCrossover()
    with pytest.raises(OperatorError, match="share no parameter"):
        run(op, PROGRAM, "OTHER = 1  # evo: int(0, 3)\n")
    with pytest.raises(OperatorError, match="agree on every shared parameter"):
        run(op, PROGRAM, PROGRAM.replace("0.999", "0.99"))


# --- function crossover -----------------------------------------------------------------------

DONOR = (
    PROGRAM.replace("import math\n", "import functools\nimport math\n")
    .replace("def ring(", "@functools.lru_cache(maxsize=8)\ndef ring(")
    .replace("    return r * 0.999", "    return shrink(r)  # the donor's idea")
    .replace("def solve(", "def shrink(r):\n    return r * SHRINK\n\n\nSHRINK = 0.98\n\n\ndef solve(")
    .replace("    pts = []\n", "    pts = []  # a comment-only change\n")
)


def test_function_crossover_swaps_a_function_from_parent_one() -> None:
    op = FunctionCrossover(swap_prob=1e-9)  # exactly one swap
    swapped: set[str] = set()
    for seed in range(30):
        child = run(op, PROGRAM, DONOR, seed=seed)
        text = child.source
        assert isinstance(text, str)
        ast.parse(text)
        (name,) = child.meta["swapped"]  # type: ignore[misc]
        swapped.add(name)
        if name == "radii":
            assert "    return shrink(r)  # the donor's idea\n" in text
            assert "def shrink(r):\n    return r * SHRINK\n" in text and "SHRINK = 0.98\n" in text
            assert child.meta["added"] == ["shrink", "SHRINK"]  # parent 1's order
        if name == "ring":
            assert "@functools.lru_cache(maxsize=8)\ndef ring(" in text and "import functools\n" in text
        assert "    pts = []\n" in text  # hex_grid differs only by a comment: never swapped
        assert text.startswith(PROGRAM[: PROGRAM.index("def ring")].split("\n\n\n")[0])
        assert text.endswith(PROGRAM[PROGRAM.index("def solve") :])  # parent 0's solve kept
    assert swapped == {"ring", "radii"}


def test_function_crossover_never_returns_parent_one() -> None:
    donor = PROGRAM.replace("0.999", "0.99").replace("0.35", "0.3")
    for seed in range(10):
        child = run(FunctionCrossover(swap_prob=1.0), PROGRAM, donor, seed=seed)
        assert child.source not in (PROGRAM, donor)
        assert len(child.meta["swapped"]) == 1  # type: ignore[arg-type]


def test_function_crossover_refuses_when_nothing_differs() -> None:
    op = FunctionCrossover()
    with pytest.raises(OperatorError, match="all of them are identical"):
        run(op, PROGRAM, PROGRAM.replace("MARGIN = 1e-3", "MARGIN = 2e-3"))
    with pytest.raises(OperatorError, match="none under the same name"):
        run(op, PROGRAM, "def other():\n    return 1\n")
    with pytest.raises(OperatorError, match="does not parse"):
        run(op, PROGRAM, "def radii(:\n")



def test_function_crossover_reads_a_parent_in_pieces_as_parsed_whole() -> None:
    """Statements found piece by piece (each piece parsed once for every text that has it) are
    those of one parse of the whole text: cuts inside a docstring, brackets, a decorator's call
    or a line continuation join the next piece, and odd line breaks take the whole-text parse."""
    from evo.operators.crossover import _analyse, _in_pieces, _whole

    variants = [
        PROGRAM,
        PROGRAM.replace("import math\n", "import math\nif N:\n    pass\nelse:\n    pass\ntry:\n    pass\n"
                        "except ValueError:\n    pass\nfinally:\n    pass\n"),
        PROGRAM.replace("STEP = -0.25", "STEP = (-0.25 +\n0.5)"),  # a continuation line at column 0
        PROGRAM.replace("STEP = -0.25", "STEP = -0.25 \\\n; OTHER = 2"),  # one logical line on two
        PROGRAM.replace("def ring(", "@decorate(\nlevel=2)\n@functools.cache\ndef ring("),
        PROGRAM.replace("MARGIN = 1e-3", "MARGIN = 1e-3; LIMIT = 2"),  # two statements share a line
        PROGRAM.replace("\n\n\ndef radii", "\n\n\x0c\ndef radii"),  # a form feed: splitlines cuts there
    ]

    def seen(located: list) -> list:
        return [(s.first + o, s.last + o, s.kind, s.names, s.carriable, s.lines, s.free_names())
                for s, o in located]

    for text in variants:
        pieces = _in_pieces(text)
        if "\x0c" not in text:
            assert pieces is not None
            assert seen(pieces) == seen(_whole(text))
        module = _analyse(text)
        assert list(module.defs) == ["ring", "hex_grid", "initial_centres", "radii", "solve"]
        assert module.defs["ring"].lines.startswith("@" if "@" in text else "def ring(")
        assert "MARGIN" in module.bound
        assert ("MARGIN" in module.providers) is ("LIMIT" not in text)  # a shared line is not carried



def test_operator_draw_is_numpys_weighted_choice() -> None:
    """The operator choice's draw gives numpy's `Generator.choice(n, p=...)` index and leaves the
    generator where that call would (the runs of one seed stay the same)."""
    from evo.operators.choice import _cdf, draw

    for seed in range(40):
        weights = np.random.default_rng(seed).random(1 + seed % 6) * np.array([1, 0, 1, 1, 0.5, 1])[: 1 + seed % 6]
        if not weights.any():
            weights[0] = 1.0
        probs = weights / weights.sum()
        ours, numpys = np.random.default_rng(seed + 100), np.random.default_rng(seed + 100)
        cdf = _cdf(probs)
        assert [draw(ours, cdf) for _ in range(300)] == [int(numpys.choice(len(probs), p=probs)) for _ in range(300)]
        assert ours.random() == numpys.random()



def test_lexer_reads_ascii_texts_alike_with_ascii_classes() -> None:
    """The ASCII form of the lexer's pattern (taken for all-ASCII texts) matches as the full one does."""
    from evo.operators.constants import _TOKEN, _TOKEN_ASCII

    def tokens(pattern: re.Pattern[str], text: str) -> list[tuple[tuple[int, int], ...]]:
        return [tuple(m.span(g) for g in range(8)) for m in pattern.finditer(text)]

    rnd = random.Random(0)
    texts = [PROGRAM, TRICKY.replace("ü", "u"), DONOR] + ["".join(rnd.choice("ab1_.#'\"\n -e0x\\j9F") for _ in range(30))
                                        for _ in range(500)]
    for text in texts:
        assert text.isascii()
        assert tokens(_TOKEN_ASCII, text) == tokens(_TOKEN, text)


# --- the registry -----------------------------------------------------------------------------


def test_default_registry_builds_every_operator() -> None:
    built = build_operators(DEFAULT_WEIGHTS)
    assert [(op.name, w) for op, w in built] == list(DEFAULT_WEIGHTS.items())
    assert set(OPERATORS) == set(DEFAULT_WEIGHTS) | {"transplant"}  # transplant: a suite run's, no default
    for op, _ in built:
        assert isinstance(op, Operator)
    assert {op.name: op.arity for op, _ in built} == {
        "constants": 1, "params": 1, "params_crossover": 2, "crossover": 2,
    }  # fmt: skip


def test_registry_takes_an_operator_registered_later() -> None:
    class Echo:  # stands in for the LLM operator, built with what it needs
        name, arity = "llm", 1

        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        async def propose(self, request: ProposalRequest) -> list[Proposal]:
            p = request.parents[0]
            return [Proposal(self.prefix + p.text, (p.id,), self.name)]

    registry = {**OPERATORS, "llm": lambda: Echo("# hi\n")}
    built = build_operators({"llm": 3, "constants": 1, "crossover": 0}, registry)
    assert [(op.name, w) for op, w in built] == [("llm", 3.0), ("constants", 1.0)]
    assert run(built[0][0], "x = 1\n").source == "# hi\nx = 1\n"


def test_registry_errors_teach() -> None:
    with pytest.raises(EvoError, match="unknown operator 'mutate'.*constants, crossover, params"):
        build_operators({"mutate": 1.0})
    with pytest.raises(EvoError, match="give at least one operator a positive weight"):
        build_operators({"constants": 0, "params": 0.0})
    with pytest.raises(EvoError, match="negative"):
        build_operators({"constants": -1, "params": 2})
    with pytest.raises(EvoError, match="finite number"):
        build_operators({"constants": float("nan")})
    assert build_operators({"constants": np.float32(2)})[0][1] == 2.0  # numbers from numpy are fine
    with pytest.raises(EvoError, match="not an operator"):
        build_operators({"bad": 1}, {"bad": lambda: object()})  # type: ignore[dict-item]
