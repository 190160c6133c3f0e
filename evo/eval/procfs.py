"""A process's status and children, read from outside it through /proc (Linux)."""

from __future__ import annotations

import os


def stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc/.../stat file after "pid (comm) " (state is field 0, the parent field 1), or None
    once the process is gone."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses


def children(pid: int) -> list[int]:
    """The children of every thread of `pid` (empty once it is gone)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            continue
    return kids
