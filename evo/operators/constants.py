"""Numeric-literal mutation: nudge a few of a program's numbers and leave everything else alone.

`ConstantMutation` finds the int and float literals of the parent's main file (bools and complex
numbers excluded, `-x` counted as one negative literal), picks one to `n_changes_max` of them and
rewrites only their characters, so comments and formatting survive byte for byte. Literals on a
line that declares a tunable parameter (`# evo: ...`) are left to the `params` operator.

Speed matters here (the engine makes hundreds of children a second), so the literals are found by
one regular-expression pass rather than `ast.parse` (which alone costs more than the whole
budget), and that pass is cached per parent text. A child always parses when its parent did:
a number token is replaced by a number token of the same type, and a sign is only ever added
where a unary minus is valid (see `Literal.standalone`).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from evo.errors import OperatorError
from evo.operators.base import Proposal, ProposalRequest
from evo.program import MAIN_FILE, Program, Source, source_text

# --- the lexer -------------------------------------------------------------------------------

_DEC = r"\d(?:_?\d)*"
_EXP = rf"[eE][+-]?{_DEC}"
_BASED_INT = r"0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+"
_FLOAT = rf"(?:{_DEC})?\.{_DEC}(?:{_EXP})?|{_DEC}\.(?:{_EXP})?|{_DEC}{_EXP}"
# String bodies only: a prefix (r, b, f, ...) is an identifier run just before the quote and does
# not change where a string ends, since even a raw string cannot end on an escaped quote.
_STRING = (
    r"'''(?:[^'\\]++|\\.|'(?!''))*+'''"
    r'|"""(?:[^"\\]++|\\.|"(?!""))*+"""'
    r"|'(?:[^'\\\n]++|\\.)*+'"
    r'|"(?:[^"\\\n]++|\\.)*+"'
)
# Each match first skips, possessively, everything that cannot start a token of interest
# (identifiers whole, so the digits of `x1` are never a number), then takes one token: a string,
# a comment, a number (based int, float, decimal int; a `j` suffix makes it complex), a lone
# quote (an unterminated string) or the end of the text.
_TOKEN = re.compile(
    r"""(?:[^'"#\w.]++|[^\W\d]\w*+|\.(?!\d))*+"""
    rf"""(?:({_STRING})|(\#[^\r\n]*)|(?:({_BASED_INT})|({_FLOAT})|({_DEC}))([jJ]?)|(['"])|\Z)""",
    re.S,
)
# The same pattern for a text that is all ASCII (most programs): `\w`, `\W` and `\d` then match the same
# characters either way, and the ASCII classes cost ~30% less per character.
_TOKEN_ASCII = re.compile(_TOKEN.pattern, re.S | re.ASCII)
_COMMENT_G, _BASED_G, _FLOAT_G, _INT_G, _IMAG_G, _BAD_QUOTE_G = 2, 3, 4, 5, 6, 7
_EVO_COMMENT = re.compile(r"#\s*evo:")
# After one of these, a `-` is a unary minus; after a name, a number, a string or a closing
# bracket it is a binary one, keywords aside. Soft keywords (`match`, `case`) are left out: they
# may be plain names, and taking a binary minus for a unary one is the mistake to avoid (turning
# `-1` into `0` drops the sign, which is wrong after a name), while the reverse costs nothing.
_UNARY_AFTER_CHARS = frozenset("([{,=:;+-*/%@&|^~<>!")
_UNARY_AFTER_WORDS = frozenset(keyword.kwlist) - {"True", "False", "None"}


class Literal(NamedTuple):
    """One numeric literal of a source text.

    `start:end` is its span, a unary minus included (`text[start:end]` is e.g. `-0.25`);
    `digits` is where the unsigned number token begins. `standalone` says a minus may be put
    in front of it without changing how the expression groups (nothing like `**`, `.`, `[` or
    `(` follows it), which is what lets a zero cross to the negative side.
    """

    start: int
    digits: int
    end: int
    line: int
    value: int | float
    standalone: bool

    @property
    def is_float(self) -> bool:
        return isinstance(self.value, float)


@dataclass(frozen=True, eq=False, slots=True)
class Scan:
    """What one lexer pass learned of a text: its numeric literals and its `# evo:` comments."""

    literals: tuple[Literal, ...]
    evo_comments: tuple[tuple[int, int], ...]  # (start, end) of each `# evo: ...` comment
    kinds: np.ndarray  # per literal: FLOAT, INT or SMALL_INT (0 or 1), for choosing by weight


FLOAT, INT, SMALL_INT = 0, 1, 2


def _prev_significant(text: str, pos: int, comment_starts: dict[int, int]) -> int:
    """Index of the last non-blank character before `pos` that is not in a comment; -1 if none."""
    i = pos - 1
    while i >= 0:
        c = text[i]
        if c in " \t\f\r\n\\":
            if c == "\n" and (i in comment_starts):
                i = comment_starts[i]  # the comment that ends at this newline; skip it whole
            i -= 1
            continue
        return i
    return -1


def _is_unary_minus(text: str, minus: int, comment_starts: dict[int, int]) -> bool:
    i = _prev_significant(text, minus, comment_starts)
    if i < 0:
        return True
    c = text[i]
    if c in _UNARY_AFTER_CHARS:
        return True
    if c.isalnum() or c == "_":
        j = i
        while j >= 0 and (text[j].isalnum() or text[j] == "_"):
            j -= 1
        return text[j + 1 : i + 1] in _UNARY_AFTER_WORDS
    return False


def _is_standalone(text: str, end: int) -> bool:
    """Nothing that binds tighter than a unary minus (`**`, `.x`, `[i]`, `(...)`) follows."""
    n = len(text)
    i = end
    while i < n and text[i] in " \t\f":
        i += 1
    if i == n:
        return True
    c = text[i]
    if c in ".[(":
        return False
    return not text.startswith("**", i)


class Lexed(NamedTuple):
    """The raw tokens of interest in a text: number tokens with their values, and comments."""

    numbers: tuple[tuple[int, int, int | float], ...]  # (start, end, value); no sign, no complex
    comments: tuple[tuple[int, int], ...]  # (start, end), the `#` included
    evo_comments: tuple[tuple[int, int], ...]  # the comments that begin `# evo:`


@lru_cache(maxsize=1024)
def lex(text: str) -> Lexed:
    """One regular-expression pass over `text` (cached per text).

    Raises `OperatorError` for an unterminated string, the one thing this lexer can tell is
    broken; a text that lexes may still fail to parse, which the engine's screen catches.
    """
    numbers: list[tuple[int, int, int | float]] = []
    comments: list[tuple[int, int]] = []
    for m in (_TOKEN_ASCII if text.isascii() else _TOKEN).finditer(text):
        kind = m.lastindex
        if kind == _IMAG_G:
            if m.end(_IMAG_G) > m.start(_IMAG_G):
                continue  # complex
            if m.start(_FLOAT_G) >= 0:
                start, end = m.span(_FLOAT_G)
                value: int | float = float(text[start:end])
                if not math.isfinite(value):
                    continue  # `1e999`
            else:
                g = _INT_G if m.start(_INT_G) >= 0 else _BASED_G
                start, end = m.span(g)
                value = int(text[start:end], 0 if g == _BASED_G else 10)
            numbers.append((start, end, value))
        elif kind == _COMMENT_G:
            comments.append(m.span(_COMMENT_G))
        elif kind == _BAD_QUOTE_G:
            line = text.count("\n", 0, m.start(_BAD_QUOTE_G)) + 1
            raise OperatorError(f"parent does not lex: unterminated string at line {line}")
    evo_comments = tuple(c for c in comments if _EVO_COMMENT.match(text, c[0]))
    return Lexed(tuple(numbers), tuple(comments), evo_comments)


@lru_cache(maxsize=1024)
def scan(text: str) -> Scan:
    """The numeric literals of `text` and its `# evo:` comments (cached per text)."""
    numbers, comments, evo_comments = lex(text)
    skip_lines = {text.rfind("\n", 0, start) for start, _ in evo_comments}  # by line-start index
    comment_starts = {end: start for start, end in comments}

    literals: list[Literal] = []
    kinds: list[int] = []
    line, counted = 1, 0
    size = len(text)
    for digits, end, value in numbers:
        line_start = text.rfind("\n", 0, digits)
        if line_start in skip_lines:
            continue
        after = text[end] if end < size else " "
        if after.isalnum() or after in "_.":
            continue  # `1if`, `1.real`: rewriting the digits could glue onto the next token
        start = digits
        standalone = _is_standalone(text, end)
        if standalone:  # in `-2 ** k` the minus negates the power, not the 2
            j = digits - 1
            while j > line_start and text[j] in " \t":
                j -= 1
            if j > line_start and text[j] == "-" and _is_unary_minus(text, j, comment_starts):
                start, value = j, -value
        line += text.count("\n", counted, digits)
        counted = digits
        literals.append(Literal(start, digits, end, line, value, standalone))
        kinds.append(FLOAT if type(value) is float else SMALL_INT if -1 <= value <= 1 else INT)
    return Scan(tuple(literals), evo_comments, np.array(kinds, dtype=np.intp))


def find_literals(text: str) -> tuple[Literal, ...]:
    """The numeric literals of `text` that `ConstantMutation` may change, in source order."""
    return scan(text).literals


# --- formatting ------------------------------------------------------------------------------


def format_float(x: float, digits: int = 6) -> str:
    """A short literal for `x` that still reads as a float (`2.0`, never `2`)."""
    s = f"{x:.{digits}g}"
    if not any(c in s for c in ".eEn"):  # `n`: inf and nan are not literals, but never drop them
        s += ".0"
    return s


def _significant_digits(token: str) -> int:
    mantissa = re.split(r"[eE]", token)[0].replace("_", "").replace(".", "").lstrip("0")
    return max(1, len(mantissa))


def _format_int(magnitude: int, like: str) -> str:
    """Write an int the way the original token was written: hex stays hex, `1_000` keeps `_`."""
    prefix = like[:2].lower()
    if prefix in ("0x", "0b", "0o"):
        body = format(magnitude, {"0x": "x", "0b": "b", "0o": "o"}[prefix])
        if like[2:].upper() == like[2:] and prefix == "0x":
            body = body.upper()
        return like[:2] + body
    return f"{magnitude:_}" if "_" in like else str(magnitude)


# --- helpers the operators of this package share ----------------------------------------------


def parent_texts(request: ProposalRequest, arity: int, name: str) -> list[str]:
    """The main-file texts of the first `arity` parents; `OperatorError` if too few were given."""
    if len(request.parents) < arity:
        raise OperatorError(f"{name} needs {arity} parent(s), got {len(request.parents)}")
    return [source_text(p.source) for p in request.parents[:arity]]


def with_main_text(source: Source, text: str) -> Source:
    """The same source shape with its main file replaced."""
    return text if isinstance(source, str) else {**source, MAIN_FILE: text}


# --- the operator ----------------------------------------------------------------------------


class ConstantMutation:
    """Perturb 1..`n_changes_max` numeric literals of one parent.

    Floats are scaled by `exp(scale * N(0, 1))` (sign kept; a zero takes an additive step of
    about `scale`); ints move by one, or by about `scale` of their size when at least 10.
    Ints are chosen `int_prob` times as often as floats, and 0 and 1 (indices, counters,
    identities) a quarter as often again, since changing them rarely tunes anything.
    """

    name = "constants"
    arity = 1
    checks_syntax = True  # a parseable parent gives a parseable child: the engine need not parse it
    SMALL_INT_FACTOR = 0.25

    def __init__(self, n_changes_max: int = 3, scale: float = 0.1, int_prob: float = 0.3) -> None:
        if n_changes_max < 1:
            raise ValueError(f"n_changes_max must be at least 1, got {n_changes_max}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if not 0 <= int_prob <= 1:
            raise ValueError(f"int_prob must be in [0, 1], got {int_prob}")
        self.n_changes_max = n_changes_max
        self.scale = scale
        self.int_prob = int_prob
        # indexed by FLOAT, INT, SMALL_INT
        self._kind_weights = np.array([1.0, int_prob, int_prob * self.SMALL_INT_FACTOR])

    def __repr__(self) -> str:
        return f"ConstantMutation(n_changes_max={self.n_changes_max!r}, scale={self.scale!r}, int_prob={self.int_prob!r})"

    def _new_float(self, text: str, lit: Literal, rng: np.random.Generator) -> tuple[str, float]:
        """The new magnitude's text and value (negative only for a zero that may cross over)."""
        old = abs(lit.value)
        digits = min(6, max(3, _significant_digits(text[lit.digits : lit.end]) + 2))
        for _ in range(8):
            if old == 0.0:
                new = abs(float(rng.standard_normal())) * self.scale
                if lit.standalone and rng.random() < 0.5:
                    new = -new
            else:
                new = old * math.exp(self.scale * float(rng.standard_normal()))
            s = format_float(abs(new), digits)
            if float(s) != old:
                return s, math.copysign(float(s), new)
            digits = min(digits + 1, 12)  # the step rounded away: print more digits
        new = old + self.scale if old == 0.0 else old * (1 + self.scale)
        return format_float(new, 12), new

    def _new_int(self, text: str, lit: Literal, rng: np.random.Generator) -> tuple[str, int]:
        """The new magnitude's text and value (negative only for a zero that may cross over)."""
        old = abs(int(lit.value))
        if old < 10:
            step = 1
        else:
            step = max(1, round(old * self.scale * abs(float(rng.standard_normal()))))
        up = rng.random() < 0.5
        if old == 0 and not (lit.standalone and lit.start == lit.digits):
            up = True  # a zero may only go negative where a minus can stand in front of it
        new = old + step if up else old - step
        return _format_int(abs(new), text[lit.digits : lit.end]), new

    def applicable(self, parents: Sequence[Program]) -> bool:
        """Whether the parent has a literal this operator may change (the scan is cached per text)."""
        found = scan(source_text(parents[0].source))
        return bool(np.count_nonzero(self._kind_weights[found.kinds]))

    async def propose(self, request: ProposalRequest) -> list[Proposal]:
        (text,) = parent_texts(request, self.arity, self.name)
        found = scan(text)
        literals = found.literals
        if not literals:
            raise OperatorError("no numeric literals to mutate (outside `# evo:` parameter lines)")
        rng = request.rng
        w = self._kind_weights[found.kinds]
        eligible = int(np.count_nonzero(w))
        if eligible == 0:
            raise OperatorError("only int literals found and int_prob is 0")
        k = int(rng.integers(1, min(self.n_changes_max, eligible) + 1))
        # Weighted sampling without replacement as an exponential race (Efraimidis-Spirakis):
        # the k smallest Exp(1)/w win. rng.choice(p=..., replace=False) is ~10x slower here.
        race = np.divide(rng.standard_exponential(len(w)), w, out=np.full(len(w), np.inf), where=w > 0)
        picked = sorted(np.argpartition(race, k - 1)[:k].tolist())

        pieces: list[str] = []
        changed: list[dict[str, object]] = []
        cursor = 0
        for i in picked:
            lit = literals[i]
            if lit.is_float:
                digits, value = self._new_float(text, lit, rng)
            else:
                digits, value = self._new_int(text, lit, rng)
            if value < 0:  # a zero crossing over: write the sign in front of it
                new = "-" + digits
            elif value == 0 and lit.start != lit.digits:  # `-1` -> `0`: drop the sign
                new = digits
            else:  # keep the sign (and any space after it) as written
                new = text[lit.start : lit.digits] + digits
            pieces.append(text[cursor : lit.start])
            pieces.append(new)
            cursor = lit.end
            changed.append({"line": lit.line, "old": text[lit.start : lit.end], "new": new})
        pieces.append(text[cursor:])
        child = "".join(pieces)
        parent = request.parents[0]
        return [
            Proposal(
                source=with_main_text(parent.source, child),
                parents=(parent.id,),
                operator=self.name,
                meta={"changed": changed},
            )
        ]
