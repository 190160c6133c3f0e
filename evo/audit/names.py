"""Name resolution for the static pass: what a name in a candidate's source stands for.

This room owns imports, aliases, dotted names and scopes. `import torch as t; t.cuda.Stream` resolves to
`torch.cuda.Stream`; so do `from torch.cuda import Stream as S`, `S = getattr(torch.cuda, "Stream")` and
`importlib.import_module("torch.cuda")`. A scoped prepass records, for every function, its locals,
globals and nonlocals, so that a local `t` is not mistaken for the module `t`.

The fact collection (`evo.audit.index`) builds on `Resolver`, so the checks match what is used, not how
it is spelled. Stdlib only. Flow-insensitive on purpose: an alias bound anywhere counts everywhere (it
over-reports, never under-reports).
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evo.audit.index import FunctionInfo

BUILTINS = frozenset(dir(builtins))

# Builtins worth following through an alias (`e = eval; e(s)`); the others are not tracked.
ALIASED_BUILTINS = frozenset({f"builtins.{n}" for n in (
    "__import__", "eval", "exec", "compile", "getattr", "setattr", "delattr", "open", "id", "hash", "vars",
    "globals", "locals", "breakpoint", "input")})

# Modules that library modules import for their own use and so carry as attributes (`os.sys`, `torch.os`,
# `numpy.core.multiarray.sys`). Read that way they resolve to the module itself, so the rules on
# `sys.modules` or `os.system` apply whatever the spelling. Left out: names that are also honest attributes
# of libraries (`torch.signal`, `torch.types`, `torch.select`, `numpy.select`, `datetime.time`).
REACHABLE_MODULES = frozenset({
    "sys", "builtins", "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "socket", "_socket", "ssl",
    "socketserver", "urllib", "http", "importlib", "_imp", "pkgutil", "zipimport", "runpy", "site", "ctypes",
    "_ctypes", "mmap", "gc", "inspect", "dis", "traceback", "threading", "_thread", "multiprocessing",
    "concurrent", "asyncio", "pickle", "_pickle", "marshal", "shutil", "tempfile", "glob", "linecache", "atexit",
    "faulthandler", "weakref", "base64", "binascii", "codecs", "zlib",
})
# Library packages that share a name with a stdlib module (their own rules apply to them).
OWN_SUBMODULES = frozenset({"torch.multiprocessing", "torch.fx.traceback", "torch.distributed.elastic.multiprocessing"})
# Attributes that belong to sys or builtins, whatever module they are read from (`torch.sys` is `sys`,
# `np.__builtins__` is builtins). `modules` is left alone under `nn` (`torch.nn.modules` is a package) and
# on classes (`torch.nn.Module.modules` is a method).
SYS_ATTRS = {"sys": "sys", "builtins": "builtins", "__builtins__": "builtins", "modules": "sys.modules",
             "_getframe": "sys._getframe", "_current_frames": "sys._current_frames"}
# Private twins of guarded modules: `import posix; posix.system(...)` is `os.system`.
TWIN_MODULES = {"posix": "os", "nt": "os", "_socket": "socket", "_posixsubprocess": "subprocess", "_ssl": "ssl",
                "_imp": "importlib", "_frozen_importlib": "importlib", "_frozen_importlib_external": "importlib",
                "_signal": "signal", "_weakref": "weakref", "_io": "io", "_thread": "_thread"}


def module_name(name: str) -> str:
    """The public name of a module: `posix.system` -> `os.system`, `_socket` -> `socket`."""
    top, _, rest = name.partition(".")
    twin = TWIN_MODULES.get(top)
    return (twin + ("." + rest if rest else "")) if twin else name


def reach(base: str, attr: str) -> str:
    """The dotted name of `base.attr`. A module reached as an attribute of another module resolves to that
    module (`os.sys.modules` -> `sys.modules`, `torch.os.system` -> `os.system`)."""
    last = base.rsplit(".", 1)[-1]
    if attr in SYS_ATTRS and base != "sys":
        if attr != "modules" or ("nn" not in base.split(".") and not last[:1].isupper()):
            return SYS_ATTRS[attr]
    if attr in REACHABLE_MODULES and base != "builtins" and attr != last and f"{base}.{attr}" not in OWN_SUBMODULES:
        return module_name(attr)
    return f"{base}.{attr}"


def detour(base: str, attr: str) -> str | None:
    """The module `base.attr` reaches when it is a module reached through another one, else None."""
    q = reach(base, attr)
    return q if q != f"{base}.{attr}" and q != base else None


def const_str(node: ast.AST | None) -> str | None:
    """The value of a string literal, folding `"a" + "b"`; None when it is not constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = const_str(node.left), const_str(node.right)
        return a + b if a is not None and b is not None else None
    return None


def root_name(node: ast.AST) -> str | None:
    """`a` for `a.b[c].d(e).f`: the name an attribute/subscript/call chain starts from."""
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None



@dataclass
@dataclass
class Scope:
    """A function being walked: its bindings and what the fact collection learned inside it."""

    info: FunctionInfo
    local: set[str]
    glob: set[str]
    nonloc: set[str]
    factory_parent: bool  # the enclosing function returns a closure (its locals live on)
    tainted: set[str]  # names holding the inputs' data (parameters and what is computed from them)
    keyish: set[str]  # names holding identity/content keys (id, data_ptr, hash, item)
    jit: bool = False  # a Triton kernel body: compiled by Triton, no Python state to track



class Resolver:
    """Resolves names of one file. `bind()` runs the prepass; `resolve(node)` then answers for any node."""

    def __init__(self, path: str, tree: ast.Module, text: str = ""):
        self.path, self.tree = path, tree
        self.deep = "lambda" in text or ":=" in text  # the prepass must enter expressions
        self.aliases: dict[str, str] = {}
        self.star: list[str] = []
        self.module_names: set[str] = set()
        self.function_nodes: dict[str, ast.AST] = {}
        self.bound: dict[int, tuple[set[str], set[str], set[str]]] = {}
        self.docstrings: set[int] = set()
        self.scopes: list[Scope] = []
        self.modules: set[str] = set()  # names an import statement binds to a module object

    def on_import(self, qname: str, line: int) -> None:
        """Called for every module or name an import statement binds (the fact collection records it)."""

    def on_detour(self, spelled: str, qname: str, line: int) -> None:
        """Called when an import reaches a module through another one (`from os import sys`)."""

    # -- resolution -------------------------------------------------------------------------
    def resolve(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            name = node.id
            if name in self.aliases:
                return self.aliases[name]
            if self.scopes and name in self.scopes[-1].local:
                return None
            if name in self.module_names or any(name in s.local for s in self.scopes):
                return None
            if name in BUILTINS or name == "__builtins__":
                return "builtins." + name if name != "__builtins__" else "builtins"
            if self.star:
                return reach(self.star[0], name)
            return None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return reach(base, node.attr) if base else None
        if isinstance(node, ast.Call) and node.args:
            f = self.resolve(node.func)
            if f == "builtins.getattr" and len(node.args) >= 2:
                base, attr = self.resolve(node.args[0]), const_str(node.args[1])
                return reach(base, attr) if base and attr else None
            if f in ("importlib.import_module", "builtins.__import__"):
                mod = const_str(node.args[0])
                return module_name(mod) if mod else None
            return None
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            key = const_str(node.slice)
            if base in ("sys.modules",) and key:
                return module_name(key)
            if base in ("builtins", "builtins.__dict__") and key:
                return "builtins." + key
            return None
        return None

    def _bind_import(self, node: ast.Import | ast.ImportFrom) -> None:
        line = node.lineno
        if isinstance(node, ast.Import):
            for a in node.names:
                name = module_name(a.name)
                self.on_import(name, line)
                self.modules.add(a.asname or a.name.split(".")[0])
                if a.asname:
                    self.aliases[a.asname] = name
                else:
                    top = a.name.split(".")[0]
                    self.aliases[top] = module_name(top)
            return
        module = "." * node.level + module_name(node.module or "")
        self.on_import(module, line)
        for a in node.names:
            if a.name == "*":
                self.star.append(module)
                continue
            full = reach(module, a.name) if not module.endswith(".") else module + a.name
            if not module.endswith(".") and detour(module, a.name):
                self.on_detour(f"{module}.{a.name}", full, line)
            self.on_import(full, line)
            self.aliases[a.asname or a.name] = full
            if full in REACHABLE_MODULES or full in TWIN_MODULES.values():
                self.modules.add(a.asname or a.name)

    # -- the prepass: bindings --------------------------------------------------------------
    def bind(self) -> None:
        """Collect imports, aliases (two rounds: aliases of aliases), docstrings and every scope's names."""
        assigns: list[tuple[str, ast.AST]] = []
        for stmt in self.tree.body:
            for t in _stmt_targets(stmt):
                self.module_names.add(t)
        body = self.tree.body
        if body and type(body[0]) is ast.Expr and type(body[0].value) is ast.Constant \
                and isinstance(body[0].value.value, str):
            self.docstrings.add(id(body[0].value))
        for stmt in body:
            self._prepass(stmt, None, assigns)
        for _ in range(2):  # aliases of aliases
            for name, value in assigns:
                if isinstance(value, ast.Name | ast.Attribute | ast.Call | ast.Subscript):
                    q = self.resolve(value)
                    if q and (not q.startswith("builtins.") or q in ALIASED_BUILTINS):
                        self.aliases.setdefault(name, q)

    def _prepass(self, stmt: ast.AST, frame: list[set[str]] | None, assigns: list[tuple[str, ast.AST]]) -> None:
        """One scoped pass over the statements: imports and aliases, docstrings, and for each function its
        (locals, globals, nonlocals). Expressions are entered only when the file has lambdas or `:=`.

        `frame` is the innermost function's [locals, globals, nonlocals] (None at module level or in a class).
        """
        t = type(stmt)
        if t is ast.Import or t is ast.ImportFrom:
            self._bind_import(stmt)  # type: ignore[arg-type]
            if frame is not None:
                frame[0].update((a.asname or a.name).split(".")[0] for a in stmt.names)  # type: ignore[attr-defined]
            return
        if t is ast.Global or t is ast.Nonlocal:
            if frame is not None:
                frame[1 if t is ast.Global else 2].update(stmt.names)  # type: ignore[attr-defined]
            return
        if t in _DEFS:
            self._prepass_def(stmt, frame, assigns)
            return
        if t is ast.Assign and len(stmt.targets) == 1 and type(stmt.targets[0]) is ast.Name:  # type: ignore[attr-defined]
            assigns.append((stmt.targets[0].id, stmt.value))  # type: ignore[attr-defined]
        if frame is not None:
            for target in _targets(stmt):
                for n in ast.walk(target):
                    if type(n) is ast.Name and type(n.ctx) is not ast.Load:
                        frame[0].add(n.id)
        if self.deep:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr | ast.withitem):
                    self._prepass_expr(child, frame, assigns)
        for block in ("body", "orelse", "finalbody"):
            for child in getattr(stmt, block, ()):
                self._prepass(child, frame, assigns)
        for handler in getattr(stmt, "handlers", ()):
            if handler.name and frame is not None:
                frame[0].add(handler.name)
            for child in handler.body:
                self._prepass(child, frame, assigns)
        for case in getattr(stmt, "cases", ()):
            for child in case.body:
                self._prepass(child, frame, assigns)

    def _prepass_expr(self, node: ast.AST, frame: list[set[str]] | None, assigns: list[tuple[str, ast.AST]]) -> None:
        if type(node) is ast.Lambda:
            self._prepass_def(node, frame, assigns)
            return
        if type(node) is ast.NamedExpr:
            assigns.append((node.target.id, node.value))  # type: ignore[attr-defined]
            if frame is not None:
                frame[0].add(node.target.id)  # type: ignore[attr-defined]
        for child in ast.iter_child_nodes(node):
            self._prepass_expr(child, frame, assigns)

    def _prepass_def(self, node: ast.AST, frame: list[set[str]] | None, assigns: list[tuple[str, ast.AST]]) -> None:
        is_lambda = type(node) is ast.Lambda
        if not is_lambda:
            body = node.body  # type: ignore[attr-defined]
            if body and type(body[0]) is ast.Expr and type(body[0].value) is ast.Constant \
                    and isinstance(body[0].value.value, str):
                self.docstrings.add(id(body[0].value))
            if frame is not None:
                frame[0].add(node.name)  # type: ignore[attr-defined]
            if self.deep:
                for d in node.decorator_list:  # type: ignore[attr-defined]
                    self._prepass_expr(d, frame, assigns)
        if type(node) is ast.ClassDef:
            if self.deep:
                for b in [*node.bases, *node.keywords]:
                    self._prepass_expr(b, frame, assigns)
            for child in node.body:
                self._prepass(child, None, assigns)
            return
        if not is_lambda:
            self.function_nodes[node.name] = node  # type: ignore[attr-defined]
        args = node.args  # type: ignore[attr-defined]
        if self.deep:
            for d in [*args.defaults, *args.kw_defaults]:
                if d is not None:
                    self._prepass_expr(d, frame, assigns)
        params = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
        params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        inner: list[set[str]] = [params, set(), set()]
        if is_lambda:
            self._prepass_expr(node.body, inner, assigns)  # type: ignore[attr-defined]
        else:
            for child in node.body:  # type: ignore[attr-defined]
                self._prepass(child, inner, assigns)
        self.bound[id(node)] = (inner[0] - inner[1] - inner[2], inner[1], inner[2])

    def _is_outer(self, name: str) -> bool:
        """True inside a function when `name` is not one of its locals (module level or closure)."""
        return bool(self.scopes) and name not in self.scopes[-1].local


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _targets(stmt: ast.AST) -> list[ast.AST]:
    t = type(stmt)
    if t is ast.Assign:
        return stmt.targets  # type: ignore[attr-defined]
    if t in (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor):
        return [stmt.target]  # type: ignore[attr-defined]
    if t in (ast.With, ast.AsyncWith):
        return [i.optional_vars for i in stmt.items if i.optional_vars is not None]  # type: ignore[attr-defined]
    return []



def _stmt_targets(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    elif isinstance(stmt, ast.For | ast.AsyncFor):
        targets = [stmt.target]
    elif isinstance(stmt, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]

