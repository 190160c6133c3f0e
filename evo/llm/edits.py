"""Turn an LLM's reply into a child program: SEARCH/REPLACE edits (diff mode) or a whole program (rewrite mode).

Diff mode asks the model for one or more blocks of this form (prose and ``` fences around them are
ignored; each marker is 5 to 9 of its character, optionally followed by spaces)::

    <<<<<<< SEARCH
    exact lines of the parent
    =======
    replacement lines
    >>>>>>> REPLACE

Blocks apply in order, each to the result of the ones before. A SEARCH section must be whole lines
copied from the parent; it is matched exactly first, then ignoring trailing whitespace, then with
the leading indentation normalised (the replacement is re-indented by the same difference). An
empty SEARCH is only allowed when the parent is empty. Rewrite mode asks for the whole program in
one ```python fenced block.

Replies come from small models and are often malformed, so every failure is an `OperatorError`
whose message says what to fix; nothing here backtracks or builds strings quadratically, so a
1 MB reply of garbage costs milliseconds, not a hang. Children over `MAX_PROGRAM_CHARS` are
refused because `ast.parse` alone would take seconds on them.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from evo.ast_parse import parse_source
from evo.errors import OperatorError
from evo.llm.reasoning import answer_of

MAX_BLOCKS = 200  # more than this is a runaway reply, not an edit
MAX_PROGRAM_CHARS = 256_000  # ~6,000 lines; far beyond an evolved program, still parses in < 1 s
_INDENT_TRIES = 1000  # occurrences examined by the indent pass before giving up (pathological parents)
_FORMAT = "<<<<<<< SEARCH / ======= / >>>>>>> REPLACE"


@dataclass(frozen=True)
class EditBlock:
    """One SEARCH/REPLACE pair; each text is whole lines, newline-terminated ("" for no lines)."""

    search: str
    replace: str


def _marker(line: str, char: str, word: str) -> bool:
    """Whether `line` is 5-9 `char`s then `word` (case-insensitive), spaces allowed around them."""
    s = line.strip()
    n = len(s) - len(s.lstrip(char))
    return 5 <= n <= 9 and s[n:].strip().upper() == word


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _split(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _lines(text: str) -> list[str]:
    """The lines of a block text; a missing final newline is tolerated for hand-made blocks."""
    return (text[:-1] if text.endswith("\n") else text).split("\n") if text else []


def _check_empty_search(block: EditBlock, number: int, total: int, parent: str) -> None:
    if not block.search.strip() and parent.strip():
        raise OperatorError(f"edit block {number} of {total}: the SEARCH section is empty; copy the parent lines to replace")


def parse_edit_blocks(reply: str, *, parent: str | None = None) -> list[EditBlock]:
    """Parse the SEARCH/REPLACE blocks of `reply` with a line scanner (linear, no regex).

    Raises `OperatorError` when no block is found, a block lacks its ``=======`` or ``>>>>>>>
    REPLACE`` marker, a REPLACE marker has no SEARCH, there are more than `MAX_BLOCKS` blocks, or
    (when `parent` is given and not empty) a SEARCH section is empty.
    """
    blocks: list[EditBlock] = []
    state, search, replace, start = "out", [], [], 0

    def missing(what: str, where: str) -> OperatorError:
        return OperatorError(
            f"edit block {len(blocks) + 1} (opened at line {start + 1} of the reply): missing its {what} "
            f"marker before {where}; each block must be {_FORMAT}"
        )

    for i, line in enumerate(_split(reply)):
        opens = _marker(line, "<", "SEARCH")
        if state == "out":
            if opens:
                if len(blocks) == MAX_BLOCKS:
                    raise OperatorError(f"the reply has more than {MAX_BLOCKS} edit blocks; send at most {MAX_BLOCKS}")
                state, search, replace, start = "search", [], [], i
            elif _marker(line, ">", "REPLACE"):
                # A lone "=======" outside a block is ignored: markdown headings underline with it.
                raise OperatorError(
                    f"edit block {len(blocks) + 1}: '>>>>>>> REPLACE' at line {i + 1} of the reply has no "
                    f"'<<<<<<< SEARCH' before it; each block must be {_FORMAT}"
                )
        elif state == "search":
            if _marker(line, "=", ""):
                state = "replace"
            elif opens or _marker(line, ">", "REPLACE"):
                raise missing("'======='", f"line {i + 1} of the reply")
            else:
                search.append(line)
        elif _marker(line, ">", "REPLACE"):
            blocks.append(EditBlock(_text(search), _text(replace)))
            state = "out"
        elif opens:
            raise missing("'>>>>>>> REPLACE'", f"the next '<<<<<<< SEARCH' at line {i + 1} of the reply")
        else:
            replace.append(line)
    if state != "out":
        raise missing("'======='" if state == "search" else "'>>>>>>> REPLACE'", "the end of the reply")
    if not blocks:
        raise OperatorError(f"no edit blocks found in the reply; expected one or more {_FORMAT} blocks")
    if parent is not None:
        for n, block in enumerate(blocks, 1):
            _check_empty_search(block, n, len(blocks), parent)
    return blocks


def _occurrences(src: list[str], needle: list[str]) -> Iterator[int]:
    """Line indices where the lines `needle` occur in the lines `src`, first to last. Sentinel
    newlines let `str.find` (no backtracking) match whole lines only; line numbers are counted
    incrementally so walking many occurrences stays linear."""
    hay, pattern = "\n" + "\n".join(src) + "\n", "\n" + "\n".join(needle) + "\n"
    pos, last, line = hay.find(pattern), 0, 0
    while pos >= 0:
        line += hay.count("\n", last, pos)
        yield line
        pos, last = hay.find(pattern, pos + 1), pos


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _indent_delta(src: list[str], search: list[str]) -> tuple[str, str] | None:
    """(prefix to add, prefix to remove) turning every search indent into the source's, or None."""
    pairs = [(_indent(a), _indent(b)) for a, b in zip(src, search, strict=True) if b.strip()]
    if not pairs:
        return None
    have, want = pairs[0][1], pairs[0][0]
    if want.endswith(have):
        add, remove = want[: len(want) - len(have)], ""
    elif have.endswith(want):
        add, remove = "", have[: len(have) - len(want)]
    else:
        return None
    ok = all(b.startswith(remove) and add + b[len(remove) :] == a for a, b in pairs)
    return (add, remove) if ok else None


def _reindent(line: str, add: str, remove: str) -> str:
    """Shift one replacement line by the SEARCH's indent difference; a line shallower than the
    removed prefix goes to column 0 rather than failing (the parse check judges the result)."""
    lead = _indent(line)
    return add + (lead[len(remove) :] if lead.startswith(remove) else "") + line[len(lead) :] if line.strip() else ""


def _locate(src: list[str], search: list[str]) -> tuple[int, str, bool, tuple[str, str]]:
    """Where `search` matches: (line, how, ambiguous, indent delta); line -1 if nowhere."""
    for how, norm in (("exact", lambda s: s), ("trailing_ws", str.rstrip)):
        hits = _occurrences([norm(s) for s in src], [norm(s) for s in search])
        line = next(hits, -1)
        if line >= 0:
            return line, how, next(hits, -1) >= 0, ("", "")
    found: tuple[int, tuple[str, str]] | None = None
    hits = _occurrences([s.strip() for s in src], [s.strip() for s in search])
    for line in itertools.islice(hits, _INDENT_TRIES):
        delta = _indent_delta(src[line : line + len(search)], search)
        if delta is not None:
            if found is not None:
                return found[0], "indent", True, found[1]
            found = (line, delta)
    return (found[0], "indent", False, found[1]) if found else (-1, "", False, ("", ""))


def apply_edit_blocks(source: str, blocks: Sequence[EditBlock]) -> tuple[str, list[dict]]:
    """Apply `blocks` to `source` in order; return (child, one report dict per block).

    A report holds ``block`` (1-based), ``match`` ("exact", "trailing_ws", "indent" or "empty"),
    ``line`` (1-based, where the edit starts) and ``ambiguous``: a SEARCH found more than once edits
    the first occurrence and gets a ``note``. Raises `OperatorError` for a SEARCH found nowhere."""
    src, report, total = source.split("\n"), [], len(blocks)
    for n, block in enumerate(blocks, 1):
        _check_empty_search(block, n, total, "\n".join(src))
        search, replace = _lines(block.search), _lines(block.replace)
        if not block.search.strip():  # an empty parent: the replacement is the program
            src = replace + [""]
            report.append({"block": n, "match": "empty", "line": 1, "ambiguous": False})
            continue
        line, how, ambiguous, (add, remove) = _locate(src, search)
        if line < 0:
            first, stripped = next(s for s in search if s.strip()).strip(), [s.strip() for s in src]
            # Pointing at the first line's position tells the model which later line it misquoted.
            at = stripped.index(first) + 1 if first in stripped else 0
            hint = f" (that line is at line {at}, but the lines after it differ)" if at else ""
            raise OperatorError(
                f"edit block {n} of {total}: SEARCH text not found in the parent; first line was: "
                f"'{first[:100]}{'...' * (len(first) > 100)}'{hint}; copy the SEARCH lines exactly from the parent"
            )
        if how == "indent":
            replace = [_reindent(r, add, remove) for r in replace]
        src[line : line + len(search)] = replace
        entry = {"block": n, "match": how, "line": line + 1, "ambiguous": ambiguous}
        if ambiguous:
            entry["note"] = f"SEARCH text occurs more than once; edited the first occurrence (line {line + 1})"
        report.append(entry)
    return "\n".join(src), report


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of each ``` fenced block; an unclosed last fence runs to the end."""
    found, tag, body = [], None, []
    for line in _split(text):
        s = line.strip()
        if tag is None:
            if s.startswith("```"):
                tag, body = (s[3:].split() or [""])[0].lower(), []
        elif len(s) >= 3 and not s.strip("`"):
            found.append((tag, _text(body)))
            tag = None
        else:
            body.append(line)
    if tag is not None:
        found.append((tag, _text(body)))
    return found


@lru_cache(maxsize=4)  # apply_reply parses an unfenced reply twice (extract, then check); once is enough
def _parse(text: str) -> ast.Module | Exception:
    """The module of `text`, or the (traceback-free) exception that parsing it raised."""
    try:
        return parse_source(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # null bytes, deep nesting
        return e.with_traceback(None)


def extract_program(reply: str, language: str = "python") -> str:
    """The program of a rewrite-mode reply: the largest ```python/```py/bare fenced block; without
    any fence, the reply itself if it parses as Python and is more than bare expressions (so that
    a one-word answer like "Done" is not taken for a program). Raises `OperatorError` otherwise."""
    lang = language.lower()
    tags = {"", lang} | ({"py", "python3"} if lang == "python" else set())
    bodies = [body for tag, body in _fenced_blocks(reply) if tag in tags and body.strip()]
    if bodies:
        return max(bodies, key=len)
    if lang == "python" and "```" not in reply:
        tree = _parse(reply) if len(reply) <= MAX_PROGRAM_CHARS else None
        if isinstance(tree, ast.Module) and any(not isinstance(stmt, ast.Expr) for stmt in tree.body):
            return reply if reply.endswith("\n") else reply + "\n"
    raise OperatorError(f"no code block in the reply; put the whole program in one ```{language} fenced block")


def apply_reply(parent: str, reply: str, mode: str, *, thinking: bool = True) -> tuple[str, dict]:
    """Make the child from `reply`: mode "diff" applies SEARCH/REPLACE blocks, "rewrite" takes the
    whole program. A reasoning model's thinking (`evo.llm.reasoning`) is left out first
    (`thinking=False`: the caller split it off already; a second split is not idempotent). Returns
    (child source, meta). Raises `OperatorError` for an empty reply, one cut off while thinking, a child
    that differs from the parent only in trailing whitespace, or a child that does not parse."""
    if mode not in ("diff", "rewrite"):
        raise ValueError(f"unknown edit mode {mode!r}; expected 'diff' or 'rewrite'")
    if not reply.strip():
        raise OperatorError("the reply is empty")
    if thinking:  # a reasoning model's drafts inside <think> would otherwise apply before its real edits
        reply = answer_of(reply)
        if not reply.strip():
            raise OperatorError("the reply is empty after its thinking")
    if mode == "diff":
        blocks = parse_edit_blocks(reply, parent=parent)
        child, report = apply_edit_blocks(parent, blocks)
        meta: dict = {"mode": "diff", "n_blocks": len(blocks), "blocks": report}
    else:
        child, meta = extract_program(reply), {"mode": "rewrite"}
    if [x.rstrip() for x in child.strip("\n").split("\n")] == [x.rstrip() for x in parent.strip("\n").split("\n")]:
        raise OperatorError("the edits change nothing: the child is identical to the parent")
    if len(child) > MAX_PROGRAM_CHARS:
        raise OperatorError(f"the child has {len(child)} characters, over the limit of {MAX_PROGRAM_CHARS}")
    tree = _parse(child)
    if isinstance(tree, SyntaxError):
        raise OperatorError(f"the child does not parse: line {tree.lineno}: {tree.msg}")
    if isinstance(tree, Exception):
        raise OperatorError(f"the child does not parse: {type(tree).__name__}: {tree}")
    return child, meta
