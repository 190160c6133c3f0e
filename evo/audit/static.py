"""The static checks: what a candidate's source may not contain, each rule a named check.

Every check reads the one `Analysis` (`evo.audit.index`) built per audit, so screening costs one parse
and one walk whatever the number of checks. Findings carry a *capability* (`torch_compile`, `file_write`,
`asyncio`, ...): a task allows a whole check or a capability by naming it in `AUDIT_ALLOW`.

Most rules are tables (`evo.audit.rules`): a dotted name (matched with everything under it: `subprocess` matches
`subprocess.run`), an identifier (an attribute or definition name such as `f_back`), or a pattern over
string constants. The rest are small functions: file access, module state, try/except fallbacks, the
entry point, and the publish-level kernel provenance.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from evo.ast_parse import parse_source
from evo.audit.checks import Check, CheckResult, Level, Subject
from evo.audit.index import Analysis, FunctionInfo, const_str
from evo.audit.rules import (
    FACT_CHECKS,
    IDENT_RULES,
    L2_PATTERN,
    MODULE_ATTRS,
    NAME_RULES,
    OPEN_CALLS,
    OUTSIDE_HINTS,
    PURE_DEVICE_QUERIES,
    READ_CALLS,
    SCREEN_CHECK_NAMES,
    SHADOWED,
    STARTS_RULES,
    STOPS,
    STORE_RULES,
    STRING_RULES,
    TENSOR_BASES,
    WHY,
    WRITE_CALLS,
)
from evo.audit.wording import why
from evo.program import MAIN_FILE


@dataclass(frozen=True)
class Finding:
    check: str
    capability: str
    file: str
    line: int
    what: str


def _where(file: str, line: int) -> str:
    return f"line {line}" if file == MAIN_FILE else f"{file} line {line}"


def _rule_for(qname: str, ctx: str) -> tuple[str, str] | None:
    if ctx in ("store", "del"):
        parts = qname.split(".")
        for i in range(len(parts), 0, -1):
            rule = STORE_RULES.get(".".join(parts[:i]))
            if rule:
                return rule
        return ("monkeypatching", "monkeypatching")
    for prefix, rule in STARTS_RULES:
        if qname.startswith(prefix):
            return rule
    parts = qname.split(".")
    for i in range(len(parts), 0, -1):
        rule = NAME_RULES.get(".".join(parts[:i]))
        if rule:
            return rule
    return None


_VERB = {"import": "imports", "load": "uses", "call": "calls", "store": "assigns", "del": "deletes"}


def _table_findings(a: Analysis) -> Iterable[Finding]:
    for ref in a.refs:
        rule = _rule_for(ref.qname, ref.ctx)
        if rule:
            yield Finding(rule[0], rule[1], ref.file, ref.line, f"{_VERB[ref.ctx]} `{ref.qname}`")
    for fact in a.facts:
        kind = FACT_CHECKS.get(fact.kind)
        if kind:
            yield Finding(kind[0], kind[1], fact.file, fact.line, fact.what)
    for name, file, line in a.idents:
        rule = IDENT_RULES.get(name)
        if rule:
            what = f"uses the attribute `.{name}`, the name of a module (another object may lead to it)" \
                if name in MODULE_ATTRS else f"uses `{name}`"
            yield Finding(rule[0], rule[1], file, line, what)
        elif L2_PATTERN.search(name):
            yield Finding("l2_persistence", "l2_persistence", file, line, f"uses `{name}`")
    for text, file, line in a.strings:
        snippet = text if len(text) <= 40 else text[:37] + "..."
        if L2_PATTERN.search(text):
            yield Finding("l2_persistence", "l2_persistence", file, line, f"names {snippet!r}")
        for pattern, (check, cap) in STRING_RULES:
            if pattern.search(text):
                yield Finding(check, cap, file, line, f"has the string {snippet!r}")
    for name, file, line, bases in a.classes:
        for base in bases:
            if base in TENSOR_BASES or base.startswith(("torch.utils._python_dispatch", "torch.overrides")):
                check = "tensor_subclass" if base in TENSOR_BASES else "dispatch_override"
                yield Finding(check, check, file, line, f"defines class `{name}` deriving from `{base}`")
    for path in a.files:
        base = path.rsplit("/", 1)[-1]
        top = base[:-3] if base.endswith(".py") else base
        if base.endswith(".pth") or top in ("sitecustomize", "usercustomize") or (
                base.endswith(".py") and path != MAIN_FILE and top in SHADOWED):
            yield Finding("import_tricks", "import_tricks", path, 1,
                          f"ships a file named {base!r}, which Python would load in place of a real module")


# -- small functions ---------------------------------------------------------------------------------------
def _path_class(node: ast.AST | None) -> str:
    """'outside', 'inside' (a literal relative path) or 'unknown' for a path expression."""
    if node is None:
        return "unknown"
    literal = const_str(node)
    if literal is not None:
        return "outside" if literal.startswith(("/", "~")) or ".." in literal else "inside"
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and (n.value.startswith(("/", "~"))
                                                                        or ".." in n.value):
            return "outside"
        if isinstance(n, ast.Name) and n.id in OUTSIDE_HINTS or isinstance(n, ast.Attribute) and n.attr in \
                OUTSIDE_HINTS:
            return "outside"
    return "unknown"


def _open_mode(call: ast.Call, q: str) -> str | None:
    if q == "os.open":
        # A read only where the flags name O_RDONLY and nothing else: numeric flags (os.open(p, 577) writes) count
        # as a write whatever their value, so that no verdict turns on a number (the pipeline's screen cache).
        flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
        names = set(re.findall(r"O_[A-Z_]+", flags))
        return "r" if names <= {"O_RDONLY", "O_CLOEXEC"} and names and not re.search(r"\d", flags) else "w"
    mode_node = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode_node is None and len(call.args) > 1:
        mode_node = call.args[1]
    if mode_node is None:
        return "r"
    mode = const_str(mode_node)
    return mode if mode is not None else None  # None: not a literal, assume it writes


def _file_findings(a: Analysis) -> Iterable[Finding]:
    for q, call, file in a.calls:
        line = call.lineno
        func = call.func
        if q in OPEN_CALLS:
            mode = _open_mode(call, q)
            place = _path_class(call.args[0] if call.args else None)
            name = q.removeprefix("builtins.")
            if mode is None or any(c in mode for c in "wax+"):
                how = f"mode {mode!r}" if mode else "a computed mode"
                yield _write_finding(file, line, f"opens a file for writing ({how}) with `{name}`", place)
            elif place != "inside":
                where = "outside the working directory" if place == "outside" else "at a computed path"
                yield Finding("file_reads", "file_reads", file, line, f"opens a file {where} with `{name}`")
        elif q in WRITE_CALLS:
            place = max((_path_class(x) for x in call.args), key=("inside", "unknown", "outside").index,
                        default="unknown")
            yield _write_finding(file, line, f"calls `{q}`", place)
        elif q in READ_CALLS:
            place = _path_class(call.args[0] if call.args else None)
            if place != "inside":
                yield Finding("file_reads", "file_reads", file, line, f"calls `{q}` on a path that is not a "
                              "literal relative path")
        elif q is None and isinstance(func, ast.Attribute) and func.attr == "open":  # pathlib.Path.open
            mode_node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "mode"),
                                                             None)
            mode = const_str(mode_node) if mode_node is not None else "r"
            if mode is None or any(c in mode for c in "wax+"):
                yield _write_finding(file, line, "opens a path for writing (`.open`)", _path_class(func.value))
    for name, file, line in a.idents:
        if name == "__file__":
            yield Finding("file_reads", "file_reads", file, line, "uses `__file__` (the candidate's own location, "
                          "next to the harness's files)")
    for ref in a.refs:
        if ref.qname == "builtins.__file__" or ref.qname.endswith(".__file__"):
            yield Finding("file_reads", "file_reads", ref.file, ref.line, f"uses `{ref.qname}`")


def _write_finding(file: str, line: int, what: str, place: str) -> Finding:
    if place == "outside":
        return Finding("file_writes", "file_write_outside", file, line, what + ", outside the working directory")
    return Finding("file_writes", "file_write", file, line, what)


def _cache_findings(a: Analysis) -> Iterable[Finding]:
    """`functools.cache`/`lru_cache` is allowed on pure launch-configuration functions only."""
    cached = [f for f in a.functions if any(d in ("functools.cache", "functools.lru_cache",
                                                  "functools.cached_property") for d in f.decorators)]
    decorator_uses = sum(1 for f in a.functions for d in f.decorators if d.startswith("functools.")
                         and d.rsplit(".", 1)[-1] in ("cache", "lru_cache", "cached_property"))
    plain_uses = [r for r in a.refs if r.ctx in ("load", "call") and r.qname in
                  ("functools.cache", "functools.lru_cache", "functools.cached_property")]
    if len(plain_uses) > decorator_uses:
        r = plain_uses[-1]
        yield Finding("module_state", "module_state", r.file, r.line,
                      f"uses `{r.qname}` other than as a decorator (a cache that lives between calls)")
    if not cached:
        return
    launching = a.launching_functions()
    for f in cached:
        problem = _impure_reason(f, a, launching)
        if problem:
            yield Finding("module_state", "module_state", f.file, f.line,
                          f"caches `{f.name}` with functools, but it {problem}; a cache is allowed only on "
                          "a pure function of sizes (launch configuration)")


def _impure_reason(f: FunctionInfo, a: Analysis, launching: set[str]) -> str | None:
    if f.launches or f.calls & launching:
        return "launches a kernel"
    lo, hi = f.line, max(getattr(f.node, "end_lineno", f.line) or f.line, f.line)
    for r in a.refs:
        if r.file == f.file and lo < r.line <= hi and r.qname.startswith("torch.") and \
                not r.qname.startswith(PURE_DEVICE_QUERIES):
            return f"uses `{r.qname}`"
    for n in ast.walk(f.node):
        if isinstance(n, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp) and n is not f.node:
            return "builds a mutable container it could hand out"
        if isinstance(n, ast.Global | ast.Nonlocal):
            return "writes outer state"
        if isinstance(n, ast.Attribute) and n.attr in ("data_ptr", "_cdata", "untyped_storage"):
            return "reads tensor pointers"
    return None


def _fallback_findings(a: Analysis) -> Iterable[Finding]:
    if not a.tries:
        return
    launching = a.launching_functions()

    def launches(nodes: list[ast.AST]) -> bool:
        for stmt in nodes:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Call) and (isinstance(n.func, ast.Subscript) or (
                        isinstance(n.func, ast.Name) and n.func.id in launching)):
                    return True
        return False

    for node, file, _info in a.tries:
        body = node.body
        if not launches(body):
            continue
        if isinstance(node, ast.With | ast.AsyncWith):
            yield Finding("fallback", "fallback", file, node.lineno,
                          "suppresses errors from a kernel launch (contextlib.suppress)")
            continue
        for handler in node.handlers:
            stmts = handler.body
            if stmts and isinstance(stmts[-1], ast.Raise):
                continue
            if launches(stmts):
                continue  # retry with another Triton configuration
            if all(isinstance(s, ast.Continue) for s in stmts):
                continue  # next configuration of a loop
            yield Finding("fallback", "fallback", file, handler.lineno,
                          "catches a failing kernel launch and carries on without it (fallback)")


def _entry_findings(a: Analysis, subject: Subject) -> Iterable[Finding]:
    if subject.family != "kernels" or MAIN_FILE not in a.trees:
        return
    tree = a.trees[MAIN_FILE]
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == "run":
            want = _reference_arity(subject.task)
            args = stmt.args
            n = len(args.posonlyargs) + len(args.args)
            if want is not None and args.vararg is None and n < want:
                yield Finding("entry_point", "entry_point", MAIN_FILE, stmt.lineno,
                              f"defines run() with {n} positional parameters; the reference's run takes {want}")
            return
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "run" for t in stmt.targets):
            return
    yield Finding("entry_point", "entry_point", MAIN_FILE, 1, "defines no module-level function `run`")


_ARITY: dict[str, int | None] = {}


def _reference_arity(task: object) -> int | None:
    path = getattr(task, "reference_path", None)
    if path is None:
        return None
    key = str(path)
    if key not in _ARITY:
        _ARITY[key] = None
        try:
            for stmt in parse_source(path.read_text()).body:
                if isinstance(stmt, ast.FunctionDef) and stmt.name == "run":
                    _ARITY[key] = len(stmt.args.posonlyargs) + len(stmt.args.args)
        except (OSError, SyntaxError):
            pass
    return _ARITY[key]


def findings(subject: Subject) -> dict[str, list[Finding]]:
    """Every static finding of the subject, by check name (computed once, kept on the analysis)."""
    a: Analysis = subject.analysis
    cached = getattr(a, "_findings", None)
    if cached is not None:
        return cached
    out: dict[str, list[Finding]] = {}
    seen: set[tuple[str, str, int, str]] = set()
    for source in (_table_findings(a), _file_findings(a), _cache_findings(a), _fallback_findings(a),
                   _entry_findings(a, subject)):
        for f in source:
            key = (f.check, f.file, f.line, f.capability)  # one finding per line and capability
            if key not in seen:
                seen.add(key)
                out.setdefault(f.check, []).append(f)
    a._findings = out  # type: ignore[attr-defined]
    return out


def reason_for(check: str, found: list[Finding], limit: int = 4, family: str | None = None) -> str:
    """What was found and where (the first `limit` findings), then why it is refused in the words of the
    task's `family` (`evo.audit.wording`), with how the task may allow it where that family reasonably can."""
    found = sorted(found, key=lambda f: (f.file != MAIN_FILE, f.file, f.line))
    parts = [f"{_where(f.file, f.line)} {f.what}" for f in found[:limit]]
    more = f" (and {len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(parts) + more + ". " + why(check, family, (f.capability for f in found))


def _static_check(name: str) -> Callable[[Subject], CheckResult]:
    def fn(subject: Subject) -> CheckResult:
        if subject.analysis is None:
            return CheckResult.ok()
        found = [f for f in findings(subject).get(name, []) if f.capability not in subject.allow]
        return CheckResult.fail(reason_for(name, found, family=subject.family)) if found else CheckResult.ok()
    fn.__name__ = name
    return fn


def _capabilities(check: str) -> tuple[str, ...]:
    caps = {cap for table in (NAME_RULES, STORE_RULES, IDENT_RULES) for c, cap in table.values() if c == check}
    caps |= {cap for _, (c, cap) in STRING_RULES if c == check}
    caps |= {cap for c, cap in FACT_CHECKS.values() if c == check}
    extra = {"file_writes": {"file_write", "file_write_outside"}, "l2_persistence": {"l2_persistence"}}
    caps |= extra.get(check, set())
    caps.discard(check)
    return tuple(sorted(caps))


def _syntax(subject: Subject) -> CheckResult:
    a = subject.analysis
    if a is None or a.syntax_error is None:
        return CheckResult.ok()
    file, line, msg = a.syntax_error
    return CheckResult.fail(f"{_where(file, line)}: {msg}. {WHY['syntax']}")


def _kernel_provenance(subject: Subject) -> CheckResult:
    a: Analysis | None = subject.analysis
    if a is None or subject.family != "kernels":
        return CheckResult.ok()
    jit = [f for f in a.functions if any(d.startswith(("triton.jit", "triton.autotune", "triton.heuristics",
                                                       "triton.language.jit")) for d in f.decorators)]
    if not jit:
        return CheckResult.fail("the program defines no @triton.jit kernel. " + WHY["kernel_provenance"])
    run = a.function("run", MAIN_FILE)
    launching = a.launching_functions()
    if run is None or not (run.launches or run.calls & launching):
        return CheckResult.fail("run() does not launch a Triton kernel (no `kernel[grid](...)` on its path). "
                                + WHY["kernel_provenance"])
    return CheckResult.ok()


@functools.cache
def static_checks() -> tuple[Check, ...]:
    """The built-in static checks, in the order their reasons are reported."""
    out = []
    for name in SCREEN_CHECK_NAMES:
        fn = _syntax if name == "syntax" else _static_check(name)
        out.append(Check(name, Level.SCREEN, fn, STOPS[name], _capabilities(name)))
    out.append(Check("kernel_provenance", Level.PUBLISH, _kernel_provenance, STOPS["kernel_provenance"]))
    return tuple(out)
