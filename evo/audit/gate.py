"""The gate: `audit(source, level, task, context) -> Verdict`.

Its one caller is the evaluation pipeline (`evo/eval/pipeline.py`), on the trusted side: the screen before a
candidate runs, the full (or publish) audit after, with what the harness measured.

It runs every check of the level (and of the levels below it): the built-in static checks, the task's own
checks (`AUDIT_CHECKS` in its `reference.py`), and from level `full` on the dynamic checks, whose results
the evaluation harness measured and hands over in `context`:

    context = {
        "dynamic": [("dynamic:fresh_inputs", False, "output equals the previous call's ..."), ...],
        "facts": {...},  # raw measurements, for dynamic checks registered with a function
    }

Dynamic checks live in a registry (`register_dynamic`). A check registered without a function is reported
by the harness in `context["dynamic"]`; one registered with a function computes its result from
`context["facts"]` here. Checks are registered for task families by name (`kernels`, `training`: the
`family` key of `task.toml`); at level `publish` every dynamic check registered for the task's family must
have a result, or the verdict fails.

A task allows a check or a capability (see `evo.audit.static`) by naming it in `AUDIT_ALLOW` in its
`reference.py`, or in `task.toml` (read once, into `TaskConfig.audit`):

    [audit]
    allow = ["torch_compile"]
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evo.audit.checks import Check, CheckResult, Level, Subject, Verdict, as_check
from evo.audit.index import analyse
from evo.audit.static import STOPS, static_checks
from evo.errors import EvoError
from evo.program import Source, source_files

DYNAMIC = "dynamic:"


@dataclass(frozen=True)
class DynamicCheck:
    """A check the harness measures while it runs the candidate.

    `measures` says what the harness does; `families` the task families it applies to, by the name that
    `task.toml` gives as `family` ("*" for all);
    `fn`, when given, turns `context["facts"]` into a result here (None from it: not measured).
    """

    name: str
    stops: str
    measures: str
    families: tuple[str, ...] = ("kernels",)
    fn: Callable[[Subject], CheckResult | None] | None = None

    def applies_to(self, family: str | None) -> bool:
        return "*" in self.families or (family is not None and family in self.families)


DYNAMIC_CHECKS: dict[str, DynamicCheck] = {}


def register_dynamic(name: str, stops: str, measures: str, families: Iterable[str] = ("kernels",),
                     fn: Callable[[Subject], CheckResult | None] | None = None,
                     replace: bool = False) -> DynamicCheck:
    """Add a dynamic check to the registry (the harness calls this for the checks it implements)."""
    if not name.startswith(DYNAMIC):
        name = DYNAMIC + name
    if name in DYNAMIC_CHECKS and not replace:
        raise EvoError(f"dynamic check {name!r} is registered already; pass replace=True to redefine it")
    check = DynamicCheck(name, stops, measures, tuple(families), fn)
    DYNAMIC_CHECKS[name] = check
    return check


for _name, _stops, _measures in (
    ("stale_memory", "reading memory the reference (or a previous call) left behind in torch.empty buffers",
     "reference run out of process; outputs NaN-poisoned before the call; run twice with different inputs"),
    ("hidden_shapes", "special-casing the shown shapes",
     "correctness on hidden workloads (odd and prime sizes, T not a multiple of 64)"),
    ("precision", "computing in a lower precision (fp16/bf16 accumulation, TF32)",
     "error against a float64 reference, all elements, against the calibrated tolerance"),
    ("full_coverage", "skipping part of the output (1% of rows) within a matched-ratio slack",
     "every element compared; outputs poisoned with NaN before the call"),
    ("input_mutation", "modifying the inputs in place (writing the output into x)",
     "checksums of every input before and after the call"),
    ("warmup_invariance", "behaving differently after warm-up (call counters, caches filled in warm-up)",
     "timed outputs rechecked; warm-up indistinguishable from timed calls; fresh inputs every call"),
    ("fresh_inputs", "output caches keyed by pointer, shape or content",
     "new input tensors at new addresses and with new values every iteration; outputs rechecked"),
    ("files_left", "files that carry state between evaluations", "files created or changed by the run"),
    ("thread_count", "threads that keep working after run() returns",
     "threading.active_count() and OS threads before and after"),
    ("timer_integrity", "patched timers, driver functions or comparison functions",
     "id() snapshots of timing and comparison functions before and after"),
    ("output_type", "lazy or fake outputs", "type(output) is torch.Tensor, dtype, device, strides"),
    ("stream_join", "work left on another stream", "all streams joined after each timed call; the gap after its "
     "end event beyond the host's latency; the judge's clock around the call (time_bound) counts it either way"),
    ("global_flags", "changed global settings (TF32, cudnn, default dtype)",
     "snapshot of torch's global flags before and after"),
    ("no_alias", "returning a view of an input as the output", "storage ranges of outputs against inputs"),
    ("possible_time", "any timing trick the other checks missed",
     "a time under 0.9 x the speed of light is impossible: rejected, never admitted"),
    ("time_bound", "forged times: patched events or timers in the candidate's own process, work moved out of "
     "the timed events, answers cached or precomputed", "the judge's own clock around every timed call, less "
     "the overhead calibrated against a no-op in a trusted child: a call's time is never less than the clock "
     "allows within a slack; a median gap past twice the slack, or a negative one, is refused (evo/eval/time_bound.py)"),
    ("timed_outputs", "a cheap wrong kernel timed, its outputs put right before they are checked",
     "a digest of every timed call's outputs under a key drawn by the judge, committed inside the call's timing "
     "window; the outputs of every timed call that first saw an input set are fetched, digested and compared"),
    ("net_guard", "reaching the network (the user's model server, notebooks, a cluster's control plane)",
     "the candidate's process runs with no socket but AF_UNIX (seccomp on every thread) in an empty network "
     "namespace where the OS allows, applied before the candidate is imported (evo/eval/net_guard.py)"),
    ("fs_guard", "writing outside the candidate's folders (a .pth, a poisoned cache, state for later runs)",
     "Landlock: writes only beneath the work dir and a private folder (evo/eval/fs_guard.py)"),
):
    register_dynamic(_name, _stops, _measures)
register_dynamic("causality", "a language model that sees later tokens (a missing or shifted causal mask, a "
                 "sequence-wide norm or sum)", "logits up to a random cut compared before and after the tokens "
                 "after the cut are replaced, in the scoring forward process, on spliced validation windows of the "
                 "scoring shape (`evo/audit/causality.py`, `evo/eval/training/scorer.py`)", families=("training",))
# The training family's harness (evo/eval/training/, docs/training.md); each measured on the trusted side.
for _name, _stops, _measures in (
    ("data_split", "training on (or reading) the validation or test shards",
     "a Landlock read guard made before the candidate is imported, probed by opening every held-out shard, "
     "reported before any candidate code runs (training and forward processes)"),
    ("budget", "training past the budget: a patched clock, a thread or a child process that goes on working",
     "the harness's own clock from the process's start to the weights' arrival; then /proc, read from outside: "
     "no other process of the sandbox alive and no thread of it busy once the model is taken"),
    ("no_carried_state", "state carried between runs (a checkpoint or cache left for the next run)",
     "a fresh process and work dir per seed; writes only beneath it (Landlock); nothing new beside it afterwards"),
    ("harness_loss", "a loss computed by the candidate (a forward that returns a loss, or crafted values)",
     "the forward's output must be logits [B, T, V], finite; the cross-entropy is computed by the trusted scorer"),
    ("model_unchanged", "learning from the validation text while it is scored, state carried between batches",
     "the state after scoring equals the returned weights; sampled windows scored again, shuffled, in a fresh "
     "forward process must give the same logits"),
):
    register_dynamic(_name, _stops, _measures, families=("training",))


@dataclass(frozen=True)
class TaskPolicy:
    """What a task adds to the audit: allowances and checks of its own."""

    allow: frozenset[str] = frozenset()
    checks: tuple[Check, ...] = ()


_POLICIES: dict[str, TaskPolicy] = {}


def known_names(extra: Iterable[Check] = ()) -> set[str]:
    """Every name `AUDIT_ALLOW` may hold: checks, capabilities, dynamic checks."""
    names = set(DYNAMIC_CHECKS)
    for c in [*static_checks(), *extra]:
        names.add(c.name)
        names.update(c.capabilities)
    return names


def task_policy(task: Any) -> TaskPolicy:
    """The task's allowances and checks, from its config's `[audit]` table and its `reference.py` (cached)."""
    root = getattr(task, "root", None)
    if root is None:
        return TaskPolicy()
    key = str(root)
    if key in _POLICIES:
        return _POLICIES[key]
    checks: list[Check] = []
    allow: set[str] = set(getattr(getattr(task, "config", None), "audit_allow", ()))
    ref_path = root / "reference.py"
    text = ref_path.read_text() if ref_path.is_file() else ""
    if "AUDIT_ALLOW" in text or "AUDIT_CHECKS" in text:  # import the reference only when it has something
        ref = task.reference
        allow.update(str(a) for a in getattr(ref, "AUDIT_ALLOW", ()))
        checks = [as_check(c) for c in getattr(ref, "AUDIT_CHECKS", ())]
    builtin = {c.name for c in static_checks()}
    for c in checks:
        if c.name in builtin or c.name.startswith(DYNAMIC):
            raise EvoError(f"task {getattr(task, 'name', key)}: AUDIT_CHECKS defines {c.name!r}, the name of a "
                           "built-in check; give the task's check a name of its own")
    known = known_names(checks)
    unknown = sorted(allow - known)
    if unknown:
        in_toml = set(getattr(getattr(task, "config", None), "audit_allow", ()))
        where = (f"{root / 'task.toml'}: `[audit] allow`" if unknown[0] in in_toml
                 else f"{ref_path}: AUDIT_ALLOW")
        near = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean `{near[0]}`?" if near else "the README's \"Allowing a check\" lists them"
        raise EvoError(f"{where} names {', '.join(map(repr, unknown))}, which is no check or capability; {hint}")
    policy = TaskPolicy(frozenset(allow), tuple(checks))
    _POLICIES[key] = policy
    return policy


_TASKS: dict[str, Any] = {}


def _load_task(task: Any) -> Any:
    """A `Task` from a name (loaded once per process), or the object given."""
    if isinstance(task, str):
        if task not in _TASKS:
            from evo.task import load_task

            _TASKS[task] = load_task(task)
        return _TASKS[task]
    return task


def _dynamic_results(subject: Subject) -> dict[str, list[tuple[bool, str]]]:
    """Every dynamic result: the harness's reports plus those computed here from its facts."""
    out: dict[str, list[tuple[bool, str]]] = {}
    raw = subject.context.get("dynamic", ()) if subject.context else ()
    for item in raw:
        if isinstance(item, Mapping):
            name, passed, reason = item.get("check") or item.get("name"), item.get("passed"), item.get("reason", "")
        else:
            name, passed, reason = item
        name = str(name)
        if not name.startswith(DYNAMIC):
            name = DYNAMIC + name
        out.setdefault(name, []).append((bool(passed), str(reason or "")))
    for dc in DYNAMIC_CHECKS.values():
        if dc.fn is not None and dc.applies_to(subject.family):
            result = dc.fn(subject)
            if result is not None:
                out.setdefault(dc.name, []).append((result.passed, result.reason))
    return out


def audit(source: Source, level: Level | str = Level.SCREEN, task: Any = None,
          context: Mapping[str, Any] | None = None, screened: Verdict | None = None) -> Verdict:
    """Run every check of `level` on a candidate and return the verdict with its reasons.

    `source` is one file or `{path: text}`; `task` a `Task`, a task name or None (only the generic checks);
    `context` the harness's measurements (needed from level `full` on: see the module docstring).
    `screened`: the passed screen verdict of this very source, made by the caller (the pipeline) for this
    task; the screen-level static checks are then not run again (their results stand), which halves the
    cost of a full audit.
    """
    start = time.perf_counter()
    level = Level.parse(level)
    task = _load_task(task)
    policy = task_policy(task)
    files = source_files(source)
    again = set(screened.checks) if screened is not None and screened.passed and screened.level is Level.SCREEN \
        and level is not Level.SCREEN else set()
    # The parse and walk (most of a screen's cost) only where a static check still has to read them.
    subject = Subject(files, level, policy.allow, None, task, context or {})
    reasons: list[tuple[str, str]] = []
    ran: list[str] = []
    allowed: list[str] = sorted(policy.allow)
    broken = False
    for check in [*static_checks(), *policy.checks]:
        if not level.includes(check.level) or check.name in policy.allow:
            continue
        if check.name in again and check.level is Level.SCREEN:
            ran.append(check.name)  # passed in the screen of this source
            continue
        if subject.analysis is None:
            subject.analysis = analyse(files)
            broken = subject.analysis.syntax_error is not None
        if broken and check.name != "syntax":
            continue  # nothing else can be read from a file that does not parse
        ran.append(check.name)
        try:
            result = check.run(subject)
        except Exception as e:  # a broken check fails closed, and says so
            result = CheckResult.fail(f"the check itself raised {type(e).__name__}: {e}; the candidate cannot "
                                      "be cleared until the check is fixed")
        if not result.passed:
            reasons.append((check.name, result.reason))
    if level.includes(Level.FULL) and not broken:
        results = _dynamic_results(subject)
        for name, outcomes in results.items():
            if name in policy.allow:
                continue
            ran.append(name)
            failures = list(dict.fromkeys(r for ok, r in outcomes if not ok))
            if any(not ok for ok, _ in outcomes):
                reasons.append((name, "; ".join(f for f in failures if f) or "the harness reported a failure"))
        if level is Level.PUBLISH:
            for dc in DYNAMIC_CHECKS.values():
                if dc.applies_to(subject.family) and dc.name not in results and dc.name not in policy.allow:
                    ran.append(dc.name)
                    reasons.append((dc.name, f"the harness reported no result for this check ({dc.measures}); "
                                    "a published solution needs every dynamic check of its task family"))
    return Verdict(passed=not reasons, reasons=reasons, level=level, checks=ran, allowed=allowed,
                   seconds=time.perf_counter() - start)


def screen(source: Source, task: Any = None) -> Verdict:
    """`audit(source, Level.SCREEN, task)`: the cheap static screen run on every candidate (by the pipeline)."""
    return audit(source, Level.SCREEN, task)


def catalogue() -> list[dict[str, str]]:
    """Every check the gate knows: name, level, what it stops, capabilities (for docs and `evo audit`)."""
    rows = [{"name": c.name, "level": str(c.level), "stops": c.stops or STOPS.get(c.name, ""),
             "capabilities": ", ".join(c.capabilities), "where": "static"} for c in static_checks()]
    rows += [{"name": d.name, "level": "full", "stops": d.stops, "capabilities": "",
              "where": "harness (dynamic): " + d.measures} for d in DYNAMIC_CHECKS.values()]
    return rows
