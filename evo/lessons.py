"""A memory of lessons: what a search learned, written down every few hundred evaluations and carried on.

Every `lessons_every` evaluations, and when a run resumes, the engine writes a lesson for its task
(`LessonKeeper`): which kinds of change helped or hurt (per operator, per kind of edit, per tunable
parameter, with how often each was admitted and by how much it beat its parent), which failures
recur and why (evaluation errors by kind, audit rejections by check, operator errors), and which
regions of the archive are still empty. With a model served, the model writes the lesson from
those statistics and the best diffs; a reply that is cut off, empty or otherwise unusable falls
back to the structured summary, which is also the lesson when no model is served.

Lessons are stored and versioned (evo/store/lessons.py), included in the LLM operators' prompts
(the newest of this run first, then those carried from an earlier run with `--lessons-from`,
within a token budget: `evo.llm.prompts.lessons_section`) and shown by `evo show`.

The keeper belongs to the engine, which alone writes the store; a model lesson is written in a
task of its own, so that evaluations go on while the model writes.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.errors import EvoError, OperatorError
from evo.llm.reasoning import answer_or_error, replies_of
from evo.store import Store
from evo.store.lessons import (
    Lesson,
    Outcome,
    RecentOutcomes,
    add_lesson,
    latest_lessons,
    lessons,
    recent_outcomes,
    recent_rejections,
    run_id,
)
from evo.task import DescriptorSpec, Task

log = logging.getLogger("evo.lessons")

WINDOW = 2000  # evaluations a lesson looks back over: recent behaviour, and a bounded read on big stores
MAX_LESSON_CHARS = 3000  # a model's lesson beyond this is cut (the prompt keeps less: LESSONS_TOKENS)
BEST_DIFFS = 3
STRUCTURED = "structured"


# -- statistics -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes of one kind of change: tried, failed its evaluation, admitted, beat its parent, mean gain."""

    tried: int = 0
    failed: int = 0
    admitted: int = 0
    improved: int = 0
    gains: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Tally:
        """The tally of `outcomes` (gains in their order)."""
        gains = [o.score - o.parent_score for o in outcomes
                 if o.ok and o.score is not None and o.parent_score is not None]
        return cls(len(outcomes), sum(not o.ok for o in outcomes),
                   sum(o.admission in ("new", "improve") for o in outcomes),
                   sum(g > 0 for g in gains), gains)  # a - b > 0 exactly when a > b, for floats too

    def line(self, name: str, metric: str, sign: float = 1.0) -> str:
        """One bullet; `sign` turns the oriented gains back into the metric's units (-1 when minimised)."""
        better = "higher" if sign > 0 else "lower"
        gain = f", mean {metric} change vs parent {sign * sum(self.gains) / len(self.gains):+.4g} ({better} is better)" \
            if self.gains else ""
        return (f"- {name}: {self.admitted} of {self.tried} admitted, {self.improved} beat their parent, "
                f"{self.failed} failed evaluation{gain}")

    @property
    def rate(self) -> float:
        return self.admitted / self.tried if self.tried else 0.0


def _kind_of_change(o: Outcome) -> str:
    """The kind of edit of an LLM child (diff by number of blocks, rewrite), else the operator."""
    mode = o.meta.get("mode")
    if mode == "diff":
        n = int(o.meta.get("n_blocks") or 0)
        return f"{o.operator}: diff of {'1 block' if n == 1 else f'{n} blocks' if n <= 3 else '4+ blocks'}"
    if mode == "rewrite":
        return f"{o.operator}: whole rewrite"
    changed = o.meta.get("changed")
    if isinstance(changed, list):
        n = len(changed)
        return f"{o.operator}: {'1 value' if n == 1 else f'{n} values' if n <= 3 else '4+ values'} changed"
    return o.operator


def _shape(reason: str) -> str:
    """A reason's first line with numbers and hex ids blurred, so that recurring failures group."""
    first = (reason or "").strip().splitlines()[0] if (reason or "").strip() else ""
    return re.sub(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b|\d+(\.\d+)?", "N", first)[:140]


@dataclass
class LessonStats:
    """What a lesson is written from (all plain data: it is stored with the lesson)."""

    evaluations: int
    looked_at: int
    metric: str
    sign: float  # +1 for a maximised metric, -1 for a minimised one (scores are oriented: higher is better)
    operators: dict[str, Tally]
    changes: dict[str, Tally]
    parameters: dict[str, Tally]
    failures: Counter[str]
    failure_examples: dict[str, str]
    audit_checks: Counter[str]
    audit_examples: dict[str, str]
    rejections: Counter[str]
    unexplored: list[str]
    best: list[tuple[float, str, str | None, str]]  # (gain, program id, parent id, operator), best first

    def to_data(self) -> dict[str, Any]:
        def tallies(d: dict[str, Tally]) -> dict[str, list[int]]:
            return {k: [t.tried, t.failed, t.admitted, t.improved] for k, t in d.items()}

        return {"evaluations": self.evaluations, "looked_at": self.looked_at, "operators": tallies(self.operators),
                "changes": tallies(self.changes), "parameters": tallies(self.parameters),
                "failures": dict(self.failures), "audit_checks": dict(self.audit_checks),
                "rejections": dict(self.rejections), "unexplored": self.unexplored,
                "best": [[g, pid, par, op] for g, pid, par, op in self.best]}


def collect(store: Store, task: Task, evaluations: int, elite_descriptors: Sequence[Sequence[float]] = (),
            n_cells: int | None = None, specs: Sequence[DescriptorSpec] = (), window: int = WINDOW,
            outcomes: Sequence[Outcome] | None = None) -> LessonStats:
    """Statistics of the last `window` evaluations, and of the archive from its elites' descriptors
    (`specs`: the grid's axes; none for embedding cells, whose `n_cells` count empty cells instead).
    `outcomes`: those evaluations already read (`RecentOutcomes`), else they are read here."""
    # Outcomes grouped by what they are tallied under, then tallied once per group: a lesson looks at 2,000.
    operators: dict[str, list[Outcome]] = defaultdict(list)
    changes: dict[str, list[Outcome]] = defaultdict(list)
    parameters: dict[str, list[Outcome]] = defaultdict(list)
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    checks: Counter[str] = Counter()
    check_examples: dict[str, str] = {}
    best: list[tuple[float, str, str | None, str]] = []
    looked = 0
    for o in recent_outcomes(store, window) if outcomes is None else outcomes:
        looked += 1
        if o.operator == "seed":
            continue
        operators[o.operator].append(o)
        changes[_kind_of_change(o)].append(o)
        for change in o.meta.get("changed") or []:
            if isinstance(change, dict):
                name = str(change.get("name") or f"the literal on line {change.get('line')}")
                parameters[name].append(o)
        if not o.ok:
            key = f"{o.reason_kind or 'failed'}: {_shape(o.reason or '')}"
            failures[key] += 1
            examples.setdefault(key, (o.reason or "").strip()[:300])
            if o.reason_kind == "audit" and o.verdict:
                for r in o.verdict.get("reasons") or []:
                    name = str(r.get("check", "?"))
                    checks[name] += 1
                    check_examples.setdefault(name, str(r.get("reason", ""))[:300])
        elif o.admission in ("new", "improve") and o.score is not None and o.parent_score is not None \
                and o.score > o.parent_score:
            best.append((o.score - o.parent_score, o.program_id, o.parent_id, o.operator))
    rejections: Counter[str] = Counter(f"{op}: {kind}: {_shape(reason)}"
                                       for op, kind, reason in recent_rejections(store, window))
    best.sort(key=lambda b: -b[0])
    return LessonStats(evaluations, looked, task.config.metric, task.orient(1.0), _tallies(operators), _tallies(changes),
                       _tallies(parameters), failures, examples, checks, check_examples, rejections,
                       unexplored(specs, elite_descriptors, n_cells), best[:BEST_DIFFS])


def _tallies(groups: dict[str, list[Outcome]]) -> dict[str, Tally]:
    return {name: Tally.of(group) for name, group in groups.items()}


def unexplored(specs: Sequence[DescriptorSpec], elites: Sequence[Sequence[float]], n_cells: int | None) -> list[str]:
    """Lines naming the descriptor ranges where no elite lies (bins of the task's grid), or the empty cells."""
    lines = []
    for axis, spec in enumerate(specs):
        width = (spec.high - spec.low) / spec.bins
        filled = {min(max(int((d[axis] - spec.low) / width), 0), spec.bins - 1) for d in elites if len(d) > axis}
        empty = [b for b in range(spec.bins) if b not in filled]
        runs: list[list[int]] = []
        for b in empty:
            if runs and runs[-1][1] == b - 1:
                runs[-1][1] = b
            else:
                runs.append([b, b])
        if runs:
            ranges = ", ".join(f"[{spec.low + a * width:.4g}, {spec.low + (z + 1) * width:.4g})" for a, z in runs)
            lines.append(f"- {spec.name}: no elite in {ranges} ({len(empty)} of {spec.bins} bins empty)")
    if not specs and n_cells:
        lines.append(f"- {n_cells - len(elites)} of {n_cells} cells of the archive are empty")
    return lines


# -- the text ---------------------------------------------------------------------------------------


def structured_text(stats: LessonStats, limit: int = 6) -> str:
    """The lesson without a model: the statistics as short bullet lists, most telling first."""
    m, sign = stats.metric, stats.sign
    out = [f"Lessons after {stats.evaluations} evaluations (the last {stats.looked_at} looked at)."]
    ranked = sorted(((t.rate, n, t) for n, t in stats.changes.items() if t.tried >= 2), key=lambda x: -x[0])
    helped = [t.line(n, m, sign) for r, n, t in ranked if r > 0][:limit]
    hurt = [t.line(n, m, sign) for r, n, t in reversed(ranked) if r == 0][:limit]
    if helped:
        out += ["What helped (kinds of change, by share admitted):", *helped]
    if hurt:
        out += ["What did not help (never admitted):", *hurt]
    params = sorted(((t.rate, n, t) for n, t in stats.parameters.items()), key=lambda x: -x[0])[:limit]
    if params:
        out += ["Tunable values changed:", *(t.line(n, m, sign) for _, n, t in params)]
    if stats.failures:
        out.append("Recurring failures (evaluation errors by kind):")
        out += [f"- {n}x {k}" + (f" e.g. {stats.failure_examples[k][:160]!r}" if n > 1 else "")
                for k, n in stats.failures.most_common(limit)]
    if stats.audit_checks:
        out.append("Audit rejections by check:")
        out += [f"- {name}: {n}x, e.g. {stats.audit_examples.get(name, '')[:160]!r}"
                for name, n in stats.audit_checks.most_common(limit)]
    if stats.rejections:
        out.append("Children turned away and operator errors:")
        out += [f"- {n}x {k}" for k, n in stats.rejections.most_common(limit)]
    if stats.unexplored:
        out += ["Unexplored regions of the archive:", *stats.unexplored[:limit]]
    if len(out) == 1:
        out.append("- nothing to learn yet: no child of an operator has been evaluated.")
    return "\n".join(out)


def best_diffs(store: Store, stats: LessonStats, max_lines: int = 40) -> list[str]:
    """Unified diffs (parent to child) of the children that beat their parent by most."""
    out = []
    for gain, pid, parent, operator in stats.best:
        if parent is None:
            continue
        a, b = store.get_program(parent).text, store.get_program(pid).text
        lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), "parent", "child", lineterm="", n=1))
        body = "\n".join(lines[:max_lines]) + ("\n..." if len(lines) > max_lines else "")
        out.append(f"## {operator}, gain {gain:+.4g}\n```diff\n{body}\n```")
    return out


SYSTEM = ("You keep the notebook of an automated search over programs. From its statistics you write the "
          "lessons that the next programs should follow: what to try, what to avoid, where to explore.")


def lesson_messages(task_prompt: str, stats_text: str, diffs: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking a model for a lesson."""
    parts = [f"# Task\n{task_prompt.strip()[:3000]}", f"# Statistics of the search\n{stats_text}"]
    if diffs:
        parts.append("# The changes that helped most\n" + "\n\n".join(diffs))
    parts.append("# Instruction\nWrite the lessons as at most 10 short bullet points (lines starting with '- '): "
                 "what kinds of change help, what fails and why, which regions to explore next. Reply with the "
                 "bullet points only.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_lesson(answer: str) -> str:
    """A model's lesson from its answer (thinking already left out); `OperatorError` if it is unusable."""
    text = answer.strip()
    if text.startswith("```") and text.endswith("```"):  # the whole answer fenced: take its inside
        text = "\n".join(text.splitlines()[1:-1]).strip()
    if sum(ch.isalpha() for ch in text) < 10:
        raise OperatorError(f"the lesson has no words ({len(text)} characters)")
    if len(text) > MAX_LESSON_CHARS:
        text = text[: text.rfind("\n", 0, MAX_LESSON_CHARS)].rstrip() if "\n" in text[:MAX_LESSON_CHARS] \
            else text[:MAX_LESSON_CHARS]
    return text


async def model_lesson(llm: Any, task_prompt: str, stats_text: str, diffs: Sequence[str],
                       max_tokens: int) -> tuple[str, str, dict[str, Any]]:
    """(text, source, usage) of a lesson written by `llm` (a `ChatLLM`); `OperatorError` if its reply is unusable."""
    completion = await llm.chat(lesson_messages(task_prompt, stats_text, diffs), n=1, max_tokens=max_tokens,
                                temperature=0.3)
    [(reply, truncated)] = replies_of(completion)
    text = parse_lesson(answer_or_error(reply, truncated))
    return text, f"model:{completion.model or 'unknown'}", {"completion_tokens": completion.completion_tokens}


# -- the engine's keeper -------------------------------------------------------------------------


class LessonKeeper:
    """Writes the run's lessons when due, carries an earlier run's, and gives the prompts theirs.

    `evaluated(done, population)` after every finished evaluation; `resumed(...)` when a run resumes;
    `close()` (awaited) before the model client closes; `for_prompt()` for each operator call.
    """

    def __init__(self, store: Store, task: Task, every: int, llm: Any = None, max_tokens: int = 1024,
                 lessons_from: str | None = None) -> None:
        self.store, self.task, self.every, self.llm, self.max_tokens = store, task, every, llm, max_tokens
        self.run = run_id(store)
        self.written = 0  # lessons written by this keeper
        self._pending: asyncio.Task[None] | None = None
        self._pending_args: tuple[LessonStats, str] | None = None
        self._recent = RecentOutcomes(store, WINDOW)
        # Carried once, when the run is created: a resume must not need the earlier run's directory.
        if lessons_from and store.get_meta("lessons_carried_from") is None:
            carry_lessons(store, Path(lessons_from), task)
            with store.db:
                store.set_meta("lessons_carried_from", str(lessons_from))
        self._prompt = self._prompt_lessons()

    def evaluated(self, done: int, population: Any) -> None:
        if self.every > 0 and done > 0 and done % self.every == 0:
            self.write_soon(done, population, "every")

    def resumed(self, done: int, population: Any) -> None:
        if done > 0:
            self.write_soon(done, population, "resume")

    def write_soon(self, done: int, population: Any, why: str) -> None:
        """Write a lesson now (structured) or in a task (with a model); one at a time, later ones skipped."""
        if self._pending is not None and not self._pending.done():
            return  # the model is still writing the last one; the next is due in `every` evaluations
        stats = self._stats(done, population)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a caller outside a run): no model call
            self._store(stats, structured_text(stats), STRUCTURED, why, {})
            return
        self._pending_args = (stats, why)
        self._pending = loop.create_task(self._write(stats, why))

    async def _write(self, stats: LessonStats, why: str) -> None:
        text = structured_text(stats)
        source, extra = STRUCTURED, {}
        if self.llm is not None:
            try:
                text, source, extra = await model_lesson(self.llm, self.task.prompt(), text,
                                                         best_diffs(self.store, stats), self.max_tokens)
            except Exception as e:  # noqa: BLE001  # a malformed reply, a server away: the structured one, with why
                extra = {"model_error": f"{type(e).__name__}: {e}"[:500]}
        self._store(stats, text, source, why, extra)

    def _stats(self, done: int, population: Any) -> LessonStats:
        elites: list[Sequence[float]] = []
        specs: Sequence[DescriptorSpec] = ()
        n_cells = None
        if population is not None and population.islands:
            first = population.islands[0]
            # Every island's elites' descriptors as the archive holds them (Python floats, as `tables()` gives
            # them), without building a row dict a cell. (Reading an archive hands ribs its buffered admissions
            # first; that costs the same batched here or later, a few ms a lesson, proportional to the batch.)
            elites = [d for cells in population.islands for d in cells.archive.data("descriptors").tolist()]
            specs = getattr(first, "specs", ())  # grid cells over the task's descriptors; CVT cells have none
            n_cells = int(first.archive.cells)
        return collect(self.store, self.task, done, elites, n_cells, specs, outcomes=self._recent.read())

    def _store(self, stats: LessonStats, text: str, source: str, why: str, extra: dict[str, Any]) -> None:
        lesson = add_lesson(self.store, self.run, self.task.name, stats.evaluations, source, text,
                            {"why": why, **extra, "stats": stats.to_data()})
        self.written += 1
        self.store.log("lesson", {"version": lesson.version, "evaluations": lesson.evaluations, "source": source,
                                  "why": why, **({"model_error": extra["model_error"]} if "model_error" in extra else {})})
        self._prompt = self._prompt_lessons()

    async def close(self, timeout_s: float = 60.0) -> None:
        """Wait for a lesson the model is writing; past `timeout_s` (a server away at the end of a run)
        the call is cancelled and the structured lesson is stored instead."""
        pending, self._pending = self._pending, None
        if pending is None or pending.done():
            return
        done, _ = await asyncio.wait({pending}, timeout=timeout_s)
        if not done:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
            assert self._pending_args is not None
            stats, why = self._pending_args
            self._store(stats, structured_text(stats), STRUCTURED, why,
                        {"model_error": f"the model had not written the lesson {timeout_s:.0f} s after the run ended"})

    def for_prompt(self) -> list[str]:
        """The lessons for an operator's prompt, newest first: this run's latest, then carried ones."""
        return list(self._prompt)

    def _prompt_lessons(self) -> list[str]:
        own = [x for x in lessons(self.store, self.task.name, carried=False) if x.run == self.run]
        out = [f"Written after {own[-1].evaluations} evaluations of this run:\n{own[-1].text}"] if own else []
        carried = sorted(lessons(self.store, carried=True), key=lambda x: (x.task != self.task.name, -x.created))
        for x in carried[:2]:
            where = "this task" if x.task == self.task.name else f"the task {x.task}"
            out.append(f"From an earlier run on {where} ({x.carried_from}, after {x.evaluations} evaluations):\n{x.text}")
        return out


def carry_lessons(store: Store, run_dir: Path, task: Task) -> list[Lesson]:
    """Copy the newest lessons of the run in `run_dir` into `store` (once: the copies keep their run and
    version). A run without lessons gets a structured one written from its store on the way. A suite's
    directory gives this task's run in it; another task's run is carried, said so here and in the prompts."""
    from evo.suite.layout import MEMBERS, member_dir, suite_meta

    if suite_meta(run_dir) is not None:
        member = member_dir(run_dir, task.name)
        if not member.is_dir():
            held = sorted(p.name.replace("__", "/") for p in (run_dir / MEMBERS).glob("*") if p.is_dir())
            raise EvoError(f"--lessons-from {run_dir} is a suite without the task {task.name} (its tasks: "
                           f"{', '.join(held) or 'none'}): give one of its tasks' folders, or a run of this task")
        run_dir = member
    try:
        old = Store.in_dir(run_dir, readonly=True)
    except EvoError as e:
        raise EvoError(f"--lessons-from {run_dir}: {e}") from None
    try:
        found = latest_lessons(old)
        if not found and old.count_evaluations() == 0:
            raise EvoError(f"--lessons-from {run_dir}: that run has no evaluation and no lesson to learn from")
        other = str(old.get_meta("task") or "")
        if other and Path(other).name != Path(task.name).name:
            log.warning(f"--lessons-from {run_dir}: a run of {other}, not {task.name}; its lessons are carried, and "
                        "the prompts say they come from that task")
        if not found:
            stats = collect(old, task, old.count_evaluations())
            rid = str(old.get_meta("run_id") or run_dir.resolve())
            found = [Lesson(rid, str(old.get_meta("task") or task.name), 1, stats.evaluations, STRUCTURED,
                            structured_text(stats), {"stats": stats.to_data()})]
    finally:
        old.close()
    return [add_lesson(store, x.run, x.task, x.evaluations, x.source, x.text, x.data, version=x.version,
                       carried_from=str(run_dir)) for x in found]
