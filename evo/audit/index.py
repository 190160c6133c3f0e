"""Fact collection for the static pass: the one `Analysis` that every static check reads.

Each file is parsed once and walked once. Names are resolved by `evo.audit.names` (imports, aliases,
dotted names, scopes); this room owns what the walk records with them: resolved references (`Ref`),
the facts the state, fallback and key checks need (`Fact`: writes to names that outlive a call,
module-level mutable objects and how functions use them, cached functions, computed attribute names),
each function's `FunctionInfo`, `try` statements, kernel launches (`kernel[grid](...)`), string constants,
routes to a module that avoid naming it (`os.sys`, a module handed around as a value, computed
getattr/__import__ names), and the `analyse` entry point. The module_state facts live in `evo.audit.state`.

Stdlib only. Flow-insensitive on purpose (see `evo.audit.names`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from evo.ast_parse import parse_source
from evo.audit.names import Resolver, Scope, _stmt_targets, const_str, detour, module_name, reach, root_name
from evo.audit.rules import (
    CACHE_DECORATORS,
    JIT_DECORATORS,
    KEY_TEXT,
    MUTABLE_FACTORIES,
    MUTATOR_METHODS,
    NAME_BUILDERS,
)
from evo.audit.state import StateFacts

__all__ = ["Analysis", "Fact", "FunctionInfo", "Ref", "analyse", "const_str", "root_name"]


@dataclass
class Ref:
    """A use of a resolved dotted name. `ctx` is load, call, store, del or import."""

    qname: str
    file: str
    line: int
    ctx: str


@dataclass
class Fact:
    """Anything else a check needs: `kind` says what, `what` says it in words for the reason."""

    kind: str
    file: str
    line: int
    what: str
    name: str = ""


@dataclass
class FunctionInfo:
    name: str
    file: str
    line: int
    depth: int  # 1 for module-level functions and methods
    params: tuple[str, ...]
    decorators: tuple[str, ...]  # resolved names ("triton.jit", "functools.lru_cache")
    node: ast.AST
    in_class: str | None = None
    launches: bool = False  # contains `kernel[grid](...)` directly
    calls: set[str] = field(default_factory=set)  # names of unresolved functions it calls


@dataclass
class Analysis:
    files: dict[str, str]
    trees: dict[str, ast.Module] = field(default_factory=dict)
    refs: list[Ref] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    strings: list[tuple[str, str, int]] = field(default_factory=list)  # (text, file, line); no docstrings
    idents: list[tuple[str, str, int]] = field(default_factory=list)  # attribute and def names
    functions: list[FunctionInfo] = field(default_factory=list)
    tries: list[tuple[ast.AST, str, FunctionInfo | None]] = field(default_factory=list)
    classes: list[tuple[str, str, int, tuple[str, ...]]] = field(default_factory=list)  # name, file, line, bases
    calls: list[tuple[str | None, ast.Call, str]] = field(default_factory=list)  # (resolved callee, node, file)
    syntax_error: tuple[str, int, str] | None = None  # (file, line, message)

    def function(self, name: str, file: str | None = None) -> FunctionInfo | None:
        for f in self.functions:
            if f.name == name and f.depth == 1 and f.in_class is None and (file is None or f.file == file):
                return f
        return None

    def launching_functions(self) -> set[str]:
        """Names of functions that launch a kernel directly or through other local functions."""
        launching = {f.name for f in self.functions if f.launches}
        changed = True
        while changed:
            changed = False
            for f in self.functions:
                if f.name not in launching and f.calls & launching:
                    launching.add(f.name)
                    changed = True
        return launching


def _returns_closure(fn: ast.AST) -> bool:
    """True for a factory: a function that returns a function defined inside it (or a lambda)."""
    nested = {n.name for n in ast.walk(fn) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n is not fn}
    for n in ast.walk(fn):
        if isinstance(n, ast.Return) and n.value is not None:
            if isinstance(n.value, ast.Lambda) or (isinstance(n.value, ast.Name) and n.value.id in nested):
                return True
    return False


class _Indexer(StateFacts, Resolver):
    def __init__(self, path: str, tree: ast.Module, out: Analysis, local_modules: set[str], text: str = ""):
        super().__init__(path, tree, text)
        self.out = out
        self.key_possible = bool(KEY_TEXT.search(text))
        self.local_modules = local_modules
        self.module_objects: dict[str, str] = {}  # module-level name -> "dict", "tensor", "instance of K", ...
        self.local_classes: dict[str, set[str]] = {}  # class name -> methods that write instance state
        self.cached: set[str] = set()
        self.class_stack: list[str] = []
        self.class_body: set[int] = set()

    def on_import(self, qname: str, line: int) -> None:
        self.out.refs.append(Ref(qname, self.path, line, "import"))

    def on_detour(self, spelled: str, qname: str, line: int) -> None:
        self.out.facts.append(Fact("module_reach", self.path, line, f"reaches `{qname}` through `{spelled}`, an "
                                   "attribute of another module, instead of importing it", qname))

    def _attr_ref(self, base: str, attr: str, node: ast.AST, ctx: str) -> None:
        """A reference to `base.attr` spelled without an attribute node (getattr, match patterns)."""
        q = reach(base, attr)
        if detour(base, attr):
            self.on_detour(f"{base}.{attr}", q, getattr(node, "lineno", 0))
        self.out.idents.append((attr, self.path, getattr(node, "lineno", 0)))
        self.ref(q, node, ctx)

    def _detours(self, node: ast.Attribute) -> None:
        """Record every module a resolved attribute chain reaches through another one (`os.sys.modules`)."""
        n: ast.AST = node
        while isinstance(n, ast.Attribute):
            base = self.resolve(n.value)
            if base and detour(base, n.attr):
                self.on_detour(f"{base}.{n.attr}", reach(base, n.attr), n.lineno)
            n = n.value

    # -- pass 1: bindings, then the module's mutable objects and cached functions -------------
    def collect(self) -> None:
        self.bind()
        for name, fn in self.function_nodes.items():
            for d in fn.decorator_list:  # type: ignore[attr-defined]
                if self.resolve(d.func if isinstance(d, ast.Call) else d) in CACHE_DECORATORS:
                    self.cached.add(name)
        for stmt in self.tree.body:
            if isinstance(stmt, ast.ClassDef):
                self.local_classes.setdefault(stmt.name, set())
        for stmt in self.tree.body:
            value = stmt.value if isinstance(stmt, ast.Assign | ast.AnnAssign) else None
            kind = self._mutable_kind(value) if value is not None else None
            if kind:
                for t in _stmt_targets(stmt):
                    if t not in self.aliases:
                        self.module_objects[t] = kind
                if kind.startswith("partial"):
                    self.fact("state_object", stmt, "binds a functools.partial that holds a mutable argument "
                              "(shared by every call)")

    def fact(self, kind: str, node: ast.AST, what: str, name: str = "") -> None:
        self.out.facts.append(Fact(kind, self.path, getattr(node, "lineno", 0), what, name))

    def ref(self, q: str, node: ast.AST, ctx: str) -> None:
        self.out.refs.append(Ref(q, self.path, getattr(node, "lineno", 0), ctx))

    def walk(self) -> None:
        for stmt in self.tree.body:
            self.visit(stmt, self.tree)

    def visit(self, node: ast.AST, parent: ast.AST) -> None:
        method = _DISPATCH.get(type(node))
        if method is not None:
            method(self, node, parent)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, node)

    def children(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            self.visit(child, node)

    def _ctx(self, node: ast.AST, parent: ast.AST) -> str:
        ctx = getattr(node, "ctx", None)
        if isinstance(ctx, ast.Store):
            return "store"
        if isinstance(ctx, ast.Del):
            return "del"
        return "call" if isinstance(parent, ast.Call) and parent.func is node else "load"

    def v_Name(self, node: ast.Name, parent: ast.AST) -> None:
        ctx = self._ctx(node, parent)
        if ctx in ("load", "call"):
            q = self.resolve(node)
            if q:
                self.ref(q, node, ctx)
                if ctx == "load" and node.id in self.modules and not self._plain_module_use(node, parent):
                    self.fact("dynamic_attr", node, f"hands the module `{q}` around as a value (stored, passed or "
                              "returned): what is read from it later cannot be resolved", q)
                if ctx == "load" and q in NAME_BUILDERS:
                    self.fact("dynamic_attr", node, f"passes `{q[9:]}` around as a value (its object and name are "
                              "chosen where the screen cannot read them)", q)
            if node.id == "__builtins__":
                self.out.idents.append(("__builtins__", self.path, node.lineno))
            if self.scopes and node.id in self.module_objects and self._is_outer(node.id):
                self._check_read_only(node, parent)
        elif self.scopes:
            s = self.scopes[-1]
            if node.id in s.glob:
                self.fact("global_write", node, f"assigns the module-level name `{node.id}` (declared global)",
                          node.id)
            elif node.id in s.nonloc and s.factory_parent:
                self.fact("state_write", node, f"assigns `{node.id}` of the enclosing factory (nonlocal)", node.id)

    def _plain_module_use(self, node: ast.Name, parent: ast.AST) -> bool:
        """True for `m.attr`, `getattr(m, ...)`, `alias = m`, `m is None`: uses of a module resolution follows."""
        if isinstance(parent, ast.Attribute) and parent.value is node or isinstance(parent, ast.Compare):
            return True
        if isinstance(parent, ast.Call) and parent.args and parent.args[0] is node:
            return self.resolve(parent.func) in ("builtins.getattr", "builtins.hasattr", "builtins.setattr",
                                                 "builtins.delattr", "builtins.vars", "builtins.isinstance")
        return isinstance(parent, ast.Assign) and parent.value is node and id(parent) not in self.class_body and all(
            isinstance(t, ast.Name) for t in parent.targets)

    def v_Attribute(self, node: ast.Attribute, parent: ast.AST) -> None:
        self.out.idents.append((node.attr, self.path, node.lineno))
        ctx = self._ctx(node, parent)
        q = self.resolve(node)
        if q:
            self.ref(q, node, ctx)
            self._detours(node)
            if isinstance(node.value, ast.Name | ast.Attribute):
                return
        elif ctx in ("store", "del"):
            if node.attr == "__class__":
                self.fact("class_swap", node, "assigns `__class__`, turning an object into another type")
            self._outer_write(node, "assigns attribute `." + node.attr + "` of")
        self.visit(node.value, node)

    def v_Subscript(self, node: ast.Subscript, parent: ast.AST) -> None:
        ctx = self._ctx(node, parent)
        if ctx in ("store", "del"):
            q = self.resolve(node.value)
            if q:
                self.ref(q, node, "store")
            else:
                self._outer_write(node, "assigns an item of" if ctx == "store" else "deletes an item of")
        root = root_name(node.value)
        if root and self._is_outer(root) and self._keyish(node.slice):
            self.fact("key", node, f"indexes `{root}` with an object identity or content key")
        self.visit(node.value, node)
        self.visit(node.slice, node)

    def v_Call(self, node: ast.Call, parent: ast.AST) -> None:
        func = node.func
        q = self.resolve(func)
        self.out.calls.append((q, node, self.path))
        scope = self.scopes[-1] if self.scopes else None
        if isinstance(func, ast.Subscript) and scope:
            scope.info.launches = True
        if isinstance(func, ast.Name) and q is None and scope:
            scope.info.calls.add(func.id)
        if q in ("builtins.getattr", "builtins.setattr", "builtins.delattr"):
            spread = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
            obj = node.args[0] if node.args and not spread else None
            base = self.resolve(obj) if obj is not None else None
            attr = const_str(node.args[1]) if len(node.args) > 1 and not spread else None
            if attr is None:
                # Any object may hold a module (a parameter, a list item, `len.__self__`): the name must be literal.
                what = f"`{base}`" if base else (f"`{ast.unparse(obj)[:40]}`" if obj is not None else "its arguments")
                self.fact("dynamic_attr", node, f"`{q[9:]}` on {what} with a computed name", base or "")
            elif base:
                self._attr_ref(base, attr, node, "store" if q in ("builtins.setattr", "builtins.delattr") else "load")
            else:
                self.out.idents.append((attr, self.path, node.lineno))
            if base is None and obj is not None and q in ("builtins.setattr", "builtins.delattr"):
                self._outer_write(obj, f"sets an attribute (`{q[9:]}`) of", attribute=True)
        elif q in ("importlib.import_module", "builtins.__import__"):
            mod = const_str(node.args[0]) if node.args and not isinstance(node.args[0], ast.Starred) else None
            if mod:
                self.ref(module_name(mod), node, "import")
            else:
                self.fact("dynamic_import", node, f"`{q.rsplit('.', 1)[-1]}` with a computed module name (the "
                          "module it loads cannot be read)")
        elif q in ("builtins.vars",) and node.args:
            base = self.resolve(node.args[0])
            if base:
                self.fact("dynamic_attr", node, f"`vars({base})` exposes the namespace of `{base}`", base)
        if isinstance(func, ast.Attribute):
            base_q = self.resolve(func.value)
            if base_q == "os.environ" and func.attr in MUTATOR_METHODS:
                self.ref("os.environ", node, "store")
            elif base_q is None and (func.attr in MUTATOR_METHODS or (
                    func.attr.endswith("_") and not func.attr.startswith("__"))):
                self._outer_write(func.value, f"calls `.{func.attr}()` on")
            if func.attr in ("get", "setdefault", "pop", "__contains__", "__getitem__") and node.args:
                root = root_name(func.value)
                if root and self._is_outer(root) and self._keyish(node.args[0]):
                    self.fact("key", node, f"looks up `{root}` with an object identity or content key")
        if isinstance(func, ast.Name) and func.id in self.cached and scope:
            for a in [*node.args, *(k.value for k in node.keywords)]:
                if self._tainted(a):
                    self.fact("cache_call", node, f"passes tensor data to the cached function `{func.id}` "
                              "(its cache keys the result on the tensor object)", func.id)
                    break
        self.children(node)

    def v_Match(self, node: ast.Match, parent: ast.AST) -> None:
        """`case object(system=f)` reads an attribute of the subject by a name in the pattern."""
        base = self.resolve(node.subject)
        for case in node.cases:
            for n in ast.walk(case.pattern):
                if isinstance(n, ast.MatchClass):
                    for attr in n.kwd_attrs:
                        if base and n in (case.pattern, getattr(case.pattern, "pattern", None)):
                            self._attr_ref(base, attr, n, "load")
                        else:
                            self.out.idents.append((attr, self.path, n.lineno))
        self.children(node)

    def v_Dict(self, node: ast.Dict, parent: ast.AST) -> None:
        if self.scopes and any(k is not None and self._keyish(k) for k in node.keys):
            self.fact("key", node, "builds a dict keyed by object identity or content")
        self.children(node)

    def v_Compare(self, node: ast.Compare, parent: ast.AST) -> None:
        if self.scopes and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and self._keyish(node.left):
            roots = [root_name(c) for c in node.comparators]
            if any(r and self._is_outer(r) for r in roots):
                self.fact("key", node, "tests membership of an object identity or content key")
        self.children(node)

    def v_Assign(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign, parent: ast.AST) -> None:
        self.children(node)
        value = node.value
        if self.scopes and value is not None and not self.scopes[-1].jit and (self.key_possible or self.cached):
            s = self.scopes[-1]
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if self._tainted(value):
                s.tainted.update(names)
            if self._keyish(value):
                s.keyish.update(names)

    v_AnnAssign = v_Assign
    v_AugAssign = v_Assign

    def v_Constant(self, node: ast.Constant, parent: ast.AST) -> None:
        if isinstance(node.value, str | bytes) and id(node) not in self.docstrings:
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            self.out.strings.append((text, self.path, node.lineno))

    def v_Try(self, node: ast.Try, parent: ast.AST) -> None:
        self.out.tries.append((node, self.path, self.scopes[-1].info if self.scopes else None))
        self.children(node)

    v_TryStar = v_Try

    def v_With(self, node: ast.With, parent: ast.AST) -> None:
        for item in node.items:
            expr = item.context_expr
            if isinstance(expr, ast.Call) and self.resolve(expr.func) == "contextlib.suppress":
                self.out.tries.append((node, self.path, self.scopes[-1].info if self.scopes else None))
        self.children(node)

    v_AsyncWith = v_With

    def v_ClassDef(self, node: ast.ClassDef, parent: ast.AST) -> None:
        for d in node.decorator_list:
            self.visit(d, node)
        bases = []
        for b in [*node.bases, *(k.value for k in node.keywords)]:
            self.visit(b, node)
            bases.append(self.resolve(b) or (b.id if isinstance(b, ast.Name) else ""))
        self.out.classes.append((node.name, self.path, node.lineno, tuple(bases)))
        self.out.idents.append((node.name, self.path, node.lineno))
        self.class_stack.append(node.name)
        self.class_body.update(id(stmt) for stmt in node.body)  # `m = os` there is a class attribute, not an alias
        for stmt in node.body:
            self.visit(stmt, node)
        self.class_stack.pop()

    def v_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef, parent: ast.AST) -> None:
        decorators = []
        for d in node.decorator_list:
            self.visit(d, node)
            target = d.func if isinstance(d, ast.Call) else d
            decorators.append(self.resolve(target) or "")
        args = node.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default, node)
            if isinstance(default, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp) or (
                    isinstance(default, ast.Call) and self.resolve(default.func) in MUTABLE_FACTORIES):
                self.fact("mutable_default", default, f"`{node.name}` has a mutable default argument, "
                          "created once and shared by every call", node.name)
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.annotation is not None:
                self.visit(a.annotation, a)
        if node.returns is not None:
            self.visit(node.returns, node)
        in_class = self.class_stack[-1] if self.class_stack and parent is not None and \
            isinstance(parent, ast.ClassDef) else None
        params = tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
        info = FunctionInfo(node.name, self.path, node.lineno, len(self.scopes) + 1, params, tuple(decorators),
                            node, in_class)
        self.out.functions.append(info)
        self.out.idents.append((node.name, self.path, node.lineno))
        local, glob, nonloc = self.bound[id(node)]
        factory_parent = bool(self.scopes) and _returns_closure(self.scopes[-1].info.node)
        tainted = set(params) - {"self", "cls"} if not in_class else set(params[1:])
        jit = any(d.startswith(JIT_DECORATORS) for d in decorators)
        self.scopes.append(Scope(info, local, glob, nonloc, factory_parent, tainted, set(), jit))
        for stmt in node.body:
            self.visit(stmt, node)
        self.scopes.pop()

    v_AsyncFunctionDef = v_FunctionDef

    def v_Lambda(self, node: ast.Lambda, parent: ast.AST) -> None:
        args = node.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default, node)
            if isinstance(default, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp):
                self.fact("mutable_default", default, "a lambda has a mutable default argument, created once "
                          "and shared by every call")
        local, glob, nonloc = self.bound[id(node)]
        info = FunctionInfo("<lambda>", self.path, node.lineno, len(self.scopes) + 1, tuple(local), (), node)
        self.scopes.append(Scope(info, local, glob, nonloc, False, set(local), set()))
        self.visit(node.body, node)
        self.scopes.pop()

    def v_Global(self, node: ast.Global, parent: ast.AST) -> None:
        if self.scopes:
            self.fact("global_decl", node, "declares " + ", ".join(f"`{n}`" for n in node.names) + " global",
                      ",".join(node.names))


_DISPATCH = {getattr(ast, name[2:]): fn for name, fn in vars(_Indexer).items()
             if name.startswith("v_") and hasattr(ast, name[2:])}


def analyse(files: dict[str, str]) -> Analysis:
    """Parse and index every Python file of a candidate. A syntax error stops at the first bad file."""
    out = Analysis(files=dict(files))
    local_modules = {p[:-3].replace("/", ".") for p in files if p.endswith(".py")}
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        try:
            tree = parse_source(text, filename=path)
        except SyntaxError as e:
            out.syntax_error = (path, e.lineno or 0, e.msg)
            return out
        out.trees[path] = tree
        indexer = _Indexer(path, tree, out, local_modules, text)
        indexer.collect()
        indexer.walk()
        # instance writes matter when the class has an instance that lives at module level
        instances = {k.split(" ", 2)[-1] for k in indexer.module_objects.values() if k.startswith("instance of ")}
        out.facts = [f for f in out.facts if f.kind != "instance_write" or f.name in instances or f.file != path]
    return out
