"""`ast.parse` behind one lock per process.

CPython 3.11 keeps the AST constructor's recursion depth in state shared by the interpreter's threads: two
threads that build trees at once (the pipeline's audit threads, a suite's pipelines) can fail one of them with
`SystemError: AST constructor recursion depth mismatch` (python/cpython gh-106905, gh-95185). A failed screen
would reject an honest candidate, so every tree evo builds is built by one thread at a time; a parse takes a
millisecond or two, far less than anything it waits beside."""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse_source(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source, filename)`, one thread at a time."""
    with _LOCK:
        return ast.parse(source, filename=filename)


def parse_expression(source: str) -> ast.Expression:
    """`ast.parse(source, mode="eval")`, one thread at a time."""
    with _LOCK:
        return ast.parse(source, mode="eval")
