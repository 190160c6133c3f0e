"""The rules of the house (docs: ../shared/ARCHITECTURE.md beside the checkout, "Rules of the house"), checked on the tree.

Each rule is a scan of evo/ (by `ast`, never by grepping text, so that a string naming `sqlite3` in the
auditor's deny-lists is not an import) or a fresh interpreter importing a module. Every scanner is also
run on a small example that breaks its rule, so that a scanner that stopped seeing anything fails here
instead of passing forever.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EVO = Path(__file__).resolve().parents[1] / "evo"
MAX_LINES = 600

# Files still over MAX_LINES, each due to be split; remove an entry once its split lands.
OVER_THE_LIMIT: dict[str, str] = {}

# What a GPU worker must never load: it starts fast on a machine that has only torch and triton.
WORKER_FORBIDDEN = ("faiss", "evo.llm", "openai", "httpx", "vllm", "transformers", "evo.store", "sqlite3",
                    "_sqlite3", "ray", "evo.population", "evo.operators", "evo.engine")
# The modules that run on such a worker: the zygote, its forked children's code, and the judge.
WORKER_MODULES = ["evo.eval.worker", "evo.eval.worker_child", "evo.eval.judge", "evo.eval.judge_process"]

_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|"
                  r"WITH|VACUUM|ATTACH)\b", re.IGNORECASE)
_CONNECTION_NAMES = re.compile(r"(^|_)(db|conn|connection|con|cur|cursor|sqlite)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- scanners


def _modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module of the evo package."""
    out = []
    for path in sorted(EVO.rglob("*.py")):
        parts = list(path.relative_to(EVO.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _rel(path: Path) -> str:
    return path.relative_to(EVO.parent).as_posix()


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an `import` statement of `source` names, relative imports resolved against `module`.

    `from a import b` counts as both `a` and `a.b`: b may be a submodule (`from evo import store`).
    """
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(p for p in [*parts, base] if p)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _within(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def sql_offences(source: str) -> list[str]:
    """Where `source` speaks SQL: imports sqlite3, or executes a statement through a connection or cursor.

    A call `x.execute(...)` counts when its first argument is SQL text or x is named like a connection
    (db, conn, cursor, ...); `executemany` and `executescript` exist only on DB-API objects.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(_within(a.name, "sqlite3") for a in node.names):
            out.append(f"line {node.lineno}: import sqlite3")
        elif isinstance(node, ast.ImportFrom) and node.module and _within(node.module, "sqlite3"):
            out.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in ("executemany", "executescript"):
                out.append(f"line {node.lineno}: .{method}(...)")
            elif method == "execute" and (_is_sql(node.args[0] if node.args else None)
                                          or _CONNECTION_NAMES.search(_receiver(node.func.value))):
                out.append(f"line {node.lineno}: .execute(...)")
    return out


def _receiver(node: ast.expr) -> str:
    """The last name of `a.b.db` in `a.b.db.execute(...)`; "" when it is not a plain name chain."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_sql(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(_SQL.match(node.value))
    if isinstance(node, ast.JoinedStr) and node.values:
        return _is_sql(node.values[0])
    if isinstance(node, ast.BinOp):
        return _is_sql(node.left)
    return False


def forbidden_loaded(module: str) -> list[str]:
    """The WORKER_FORBIDDEN modules that importing `module` loads, in a fresh interpreter."""
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr[-3000:]}"
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    return [m for m in loaded if any(_within(m, bad) for bad in WORKER_FORBIDDEN)]


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("module", WORKER_MODULES)
def test_a_worker_loads_neither_faiss_nor_the_llm_stack_nor_the_store(module: str) -> None:
    loaded = forbidden_loaded(module)
    assert not loaded, (f"`import {module}` loads {loaded}: a GPU worker imports only program, task, eval, audit "
                        "and the task's code; import the heavy module inside the function that needs it, or move "
                        "that function out of the worker's import graph")


def test_only_the_store_speaks_sql() -> None:
    offences = {
        _rel(path): found
        for name, path in _modules()
        if not _within(name, "evo.store") and (found := sql_offences(path.read_text()))
    }
    assert not offences, f"only evo/store/ speaks SQL; add a Store method instead of: {offences}"


@pytest.mark.parametrize("package", ["evo.population", "evo.operators"])
def test_population_and_operators_never_import_the_store(package: str) -> None:
    offences = {}
    for name, path in _modules():
        if _within(name, package):
            names = imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")
            if bad := sorted(n for n in names if _within(n, "evo.store")):
                offences[_rel(path)] = bad
    assert not offences, (f"{package} imports the store ({offences}): only the engine writes to the store; "
                          "let the engine pass in what is needed")


def test_the_llm_stack_never_imports_the_evaluation_side() -> None:
    """evo/llm depends on stdlib, HTTP and model libraries only (ARCHITECTURE.md); what needs Ray (the
    cluster's replica roster) is built by the engine and handed in."""
    offences = {}
    for name, path in _modules():
        if _within(name, "evo.llm"):
            names = imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")
            if bad := sorted(n for n in names if _within(n, "evo.eval") or _within(n, "ray")):
                offences[_rel(path)] = bad
    assert not offences, f"evo/llm imports the evaluation side or Ray: {offences}"


def test_no_module_passes_the_line_limit() -> None:
    counts = {_rel(path): len(path.read_text().splitlines()) for _, path in _modules()}
    unknown = [p for p in OVER_THE_LIMIT if p not in counts]
    assert not unknown, f"allow-listed files that no longer exist: {unknown}; remove them from OVER_THE_LIMIT"
    for path, reason in OVER_THE_LIMIT.items():
        state = "still over" if counts[path] > MAX_LINES else "now under (remove it from the allow-list)"
        print(f"allow-listed, {state}: {path} ({counts[path]} lines): {reason}")
    over = {p: n for p, n in counts.items() if n > MAX_LINES and p not in OVER_THE_LIMIT}
    assert not over, (f"modules over {MAX_LINES} lines: {over}. A file that long holds two rooms: split it "
                      "into modules that each own one concern")


def test_the_split_modules_stay_under_the_limit() -> None:
    for path in ("evo/engine.py", "evo/eval/sandbox.py"):
        assert path not in OVER_THE_LIMIT
        assert len((EVO.parent / path).read_text().splitlines()) <= MAX_LINES, path


# ----------------------------------------------------------------------------- the scanners can fail


def test_the_import_scan_sees_every_way_to_name_the_store() -> None:
    for source in ("import evo.store", "import evo.store.sqlite as s", "from evo.store import Store",
                   "from evo import store", "from evo.store.sqlite import SQLiteStore", "from ..store import Store",
                   "from .. import store"):
        names = imported_modules(source, "evo.population.grid")
        assert any(_within(n, "evo.store") for n in names), source
    assert not any(_within(n, "evo.store") for n in imported_modules("from evo import storey", "evo.x"))
    assert imported_modules("from . import grid", "evo.population", is_package=True) >= {"evo.population.grid"}


def test_the_sql_scan_sees_sql_and_nothing_else() -> None:
    for source in ("import sqlite3", "from sqlite3 import connect", "self.db.execute(q)",
                   "x.execute('SELECT id FROM programs')", "x.execute(f'UPDATE {t} SET a = 1')",
                   "cur.executemany(q, rows)", "c.executescript(s)"):
        assert sql_offences(source), source
    for source in ('deny = ["shutil", "sqlite3"]', "pool.execute(job)", "sqlite3_like = 1",
                   "engine.execute(plan)"):
        assert not sql_offences(source), source
    # On the real tree: the store's own SQL is seen (it is exempt from the rule, not from the scan).
    store = [path for name, path in _modules() if _within(name, "evo.store")]
    assert any(sql_offences(path.read_text()) for path in store)


def test_the_worker_check_sees_a_forbidden_import() -> None:
    assert "sqlite3" in forbidden_loaded("sqlite3")
