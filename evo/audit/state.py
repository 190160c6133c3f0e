"""Facts about state that outlives a call, for the module_state check: the part of the walk
(`evo.audit.index`) that decides whether a write, a use or a key lets run() carry results between calls.

`StateFacts` is mixed into the indexer: it reads the resolver's scopes and the indexer's module objects,
and records `Fact`s through `self.fact`. Module-level mutable objects (`_mutable_kind`), uses of them that
may change them (`_check_read_only`), writes into something that outlives the call (`_outer_write`), and
values that carry an object's identity or content (`_keyish`) or an input's data (`_tainted`).
Stdlib only.
"""

from __future__ import annotations

import ast
from typing import Any

from evo.audit.names import root_name
from evo.audit.rules import (
    INIT_METHODS,
    KEY_ATTRS,
    KEY_CALLS,
    META_ATTRS,
    MUTABLE_FACTORIES,
    MUTABLE_MODULES,
    PURE_LIBRARIES,
    READ_METHODS,
    READ_ONLY_CALLS,
    TENSOR_FACTORIES,
)


class StateFacts:
    """The module_state half of the walk (see the module docstring); mixed into `evo.audit.index._Indexer`."""

    resolve: Any
    fact: Any
    scopes: Any
    aliases: dict[str, str]
    module_objects: dict[str, str]
    local_classes: dict[str, set[str]]
    function_nodes: dict[str, ast.AST]
    cached: set[str]
    key_possible: bool
    _is_outer: Any

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
