"""Fact collection for the static pass: the one `Analysis` that every static check reads.

Each file is parsed once and walked once. Names are resolved by `evo.audit.names` (imports, aliases,
dotted names, scopes); this room owns what the walk records with them: resolved references (`Ref`),
the facts the state, fallback and key checks need (`Fact`: writes to names that outlive a call,
module-level mutable objects and how functions use them, cached functions, computed attribute names),
each function's `FunctionInfo`, `try` statements, kernel launches (`kernel[grid](...)`), string constants,
and the `analyse` entry point.

Stdlib only. Flow-insensitive on purpose (see `evo.audit.names`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from evo.audit.names import Resolver, Scope, _stmt_targets, const_str, root_name
from evo.audit.rules import (
    CACHE_DECORATORS,
    INIT_METHODS,
    JIT_DECORATORS,
    KEY_ATTRS,
    KEY_CALLS,
    KEY_TEXT,
    META_ATTRS,
    MUTABLE_FACTORIES,
    MUTABLE_MODULES,
    MUTATOR_METHODS,
    PURE_LIBRARIES,
    READ_METHODS,
    READ_ONLY_CALLS,
    TENSOR_FACTORIES,
)

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


class _Indexer(Resolver):
    def __init__(self, path: str, tree: ast.Module, out: Analysis, local_modules: set[str], text: str = ""):
        super().__init__(path, tree, text)
        self.out = out
        self.key_possible = bool(KEY_TEXT.search(text))
        self.local_modules = local_modules
        self.module_objects: dict[str, str] = {}  # module-level name -> "dict", "tensor", "instance of K", ...
        self.local_classes: dict[str, set[str]] = {}  # class name -> methods that write instance state
        self.cached: set[str] = set()
        self.class_stack: list[str] = []

    def on_import(self, qname: str, line: int) -> None:
        self.out.refs.append(Ref(qname, self.path, line, "import"))

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

    def _mutable_kind(self, value: ast.AST) -> str | None:
        if isinstance(value, ast.Dict | ast.DictComp):
            return "dict"
        if isinstance(value, ast.List | ast.ListComp):
            return "list"
        if isinstance(value, ast.Set | ast.SetComp):
            return "set"
        if isinstance(value, ast.GeneratorExp):
            return "generator"
        if isinstance(value, ast.Call):
            q = self.resolve(value.func)
            if q in MUTABLE_FACTORIES or (q and q.startswith(MUTABLE_MODULES)):
                return q.rsplit(".", 1)[-1] + " object"
            if q and (q.startswith("torch.") or q.startswith("numpy.")) and q.rsplit(".", 1)[-1] in TENSOR_FACTORIES:
                return "tensor" if q.startswith("torch.") else "array"
            if isinstance(value.func, ast.Name) and value.func.id in self.local_classes:
                return f"instance of {value.func.id}"
            if isinstance(value.func, ast.Name) and value.func.id in self.function_nodes and any(
                    isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(self.function_nodes[value.func.id])):
                return "generator"
            if q in ("functools.partial",) and any(self._mutable_kind(a) for a in
                                                   [*value.args, *(k.value for k in value.keywords)]):
                return "partial holding a mutable argument"
        return None

    # -- pass 2: the walk -------------------------------------------------------------------
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

    def _check_read_only(self, node: ast.Name, parent: ast.AST) -> None:
        kind = self.module_objects[node.id]
        if kind.startswith("instance of "):
            return  # reading a config object is fine; its writes are found as instance and attribute writes
        buffer = kind in ("tensor", "array")  # slices and views of a buffer alias it: writable
        if isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.ctx, ast.Load) \
                and not buffer:
            return
        if isinstance(parent, ast.Compare) and node in parent.comparators:
            return
        if isinstance(parent, ast.comprehension | ast.For) and parent.iter is node:
            return
        if isinstance(parent, ast.Starred | ast.keyword) and getattr(parent, "arg", None) is None:
            return
        if isinstance(parent, ast.BinOp | ast.UnaryOp | ast.BoolOp | ast.If | ast.IfExp | ast.While | ast.Assert):
            return
        if isinstance(parent, ast.Attribute) and parent.attr in READ_METHODS and not (
                buffer and parent.attr in ("view", "reshape", "T", "contiguous", "cuda", "cpu", "to")):
            return
        if isinstance(parent, ast.Call) and node in parent.args:
            q = self.resolve(parent.func)
            if q and (q in READ_ONLY_CALLS or (q.startswith(PURE_LIBRARIES) and not q.endswith("_"))):
                if not any(k.arg == "out" for k in parent.keywords):
                    return
        use = type(parent).__name__
        self.fact("outer_use", node, f"uses the module-level {kind} `{node.id}` in a way that may change it "
                  f"({use}); only reads (x[k], .get, len, iteration) are allowed", node.id)

    def v_Attribute(self, node: ast.Attribute, parent: ast.AST) -> None:
        self.out.idents.append((node.attr, self.path, node.lineno))
        ctx = self._ctx(node, parent)
        q = self.resolve(node)
        if q:
            self.ref(q, node, ctx)
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

    def _outer_write(self, target: ast.AST, how: str, attribute: bool = False) -> None:
        """A store into something: flag it when the thing outlives the call."""
        if not self.scopes:
            return
        root = root_name(target)
        if root is None:
            return
        s = self.scopes[-1]
        info = s.info
        if root in s.local:
            first = info.params[0] if info.params else None
            if info.in_class and root == first and info.name not in INIT_METHODS:
                self.local_classes.setdefault(info.in_class, set()).add(info.name)
                self.fact("instance_write", target, f"{how} `{root}` in {info.in_class}.{info.name}",
                          info.in_class)
            elif (root in info.params and info.depth == 1 and not info.in_class and (
                    (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name))
                    or (attribute and isinstance(target, ast.Name)))):
                self.fact("state_write", target, f"{how} the argument `{root}` (state stored on an input)", root)
            return
        if root in self.aliases:
            return  # a store into an imported module: the monkeypatching check reads it from the refs
        if any(root in sc.local for sc in self.scopes[:-1]) and not s.factory_parent:
            return  # the enclosing function's local: lives only as long as that call
        self.fact("state_write", target, f"{how} `{root}`, which outlives the call", root)

    def _keyish(self, node: ast.AST) -> bool:
        if not self.key_possible or (self.scopes and self.scopes[-1].jit):
            return False
        for n in ast.walk(node):
            if isinstance(n, ast.Call):
                f = n.func
                if isinstance(f, ast.Attribute) and f.attr in KEY_ATTRS:
                    return True
                q = self.resolve(f)
                if q and (q in KEY_CALLS or q.startswith("hashlib.")):
                    return True
            elif isinstance(n, ast.Attribute) and n.attr in ("_cdata", "__cuda_array_interface__"):
                return True
            elif isinstance(n, ast.Name) and self.scopes and n.id in self.scopes[-1].keyish:
                return True
        return False

    def _tainted(self, node: ast.AST) -> bool:
        """True when `node` carries an input's data (not only its shape, dtype or device)."""
        if not self.scopes or not self.cached or self.scopes[-1].jit:
            return False
        tainted = self.scopes[-1].tainted
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Attribute) and n.attr in META_ATTRS:
                continue
            if isinstance(n, ast.Name) and n.id in tainted:
                return True
            stack.extend(ast.iter_child_nodes(n))
        return False

    def v_Call(self, node: ast.Call, parent: ast.AST) -> None:
        func = node.func
        q = self.resolve(func)
        self.out.calls.append((q, node, self.path))
        scope = self.scopes[-1] if self.scopes else None
        if isinstance(func, ast.Subscript) and scope:
            scope.info.launches = True
        if isinstance(func, ast.Name) and q is None and scope:
            scope.info.calls.add(func.id)
        if q in ("builtins.getattr", "builtins.setattr", "builtins.delattr") and node.args:
            base = self.resolve(node.args[0])
            attr = const_str(node.args[1]) if len(node.args) > 1 else None
            if base and attr is None:
                self.fact("dynamic_attr", node, f"`{q[9:]}` on `{base}` with a computed name", base)
            elif base and attr:
                self.ref(f"{base}.{attr}", node, "store" if q in ("builtins.setattr", "builtins.delattr")
                         else "load")
            elif q in ("builtins.setattr", "builtins.delattr"):
                self._outer_write(node.args[0], f"sets an attribute (`{q[9:]}`) of", attribute=True)
        elif q in ("importlib.import_module", "builtins.__import__") and node.args:
            mod = const_str(node.args[0])
            if mod:
                self.ref(mod, node, "import")
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
            tree = ast.parse(text, filename=path)
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
