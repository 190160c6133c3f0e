"""The evaluation pipeline: the one way from a candidate to a score and a verdict, and the only caller of
the auditor.

    screen ──▶ family.job ──▶ backend.evaluate ──▶ family.score ──▶ full audit
    (static)   (contents,     (runs the job: a       (trusted        (static checks again + the
               no paths)      sandbox, the GPU)      side)           harness's dynamic checks)

The screen (`Level.SCREEN`) runs here, on the trusted side, before anything of the candidate runs: a
candidate that fails it never reaches a backend. The backend only runs the job and hands back the
candidate's outputs or the harness's scored report with its dynamic checks (`EvalResult.checks`); the
task's family scores the answer; the full audit (`Level.FULL`, or `Level.PUBLISH` for `evo publish`) then
decides here, in a process that never ran candidate code, from what the harness measured. Every result
carries the verdict (`EvalResult.verdict`, JSON); a candidate that fails the screen or the audit fails with
`failure="audit"` and the verdict's text as `error`.

    pipeline = Pipeline(task, backend)            # the evaluator protocol: workers, evaluate, close
    result = await pipeline.evaluate(program)
    result = await pipeline.evaluate(program, "short")   # a cheaper rung of the family's (`fidelities`)
    result = evaluate_source(task, source)        # one program, synchronously (evo eval, tests)

A backend with `run(job)` (`JobRunner`: the local pool, the training harness) is handed the job itself, its
rung and the task folder's hash with it, and refuses a hash that is not its task's; any other backend gets the
job's program and runs the whole evaluation only.

`Pipeline(task)` builds the family's default backend (`family.backend`); the engine passes its own.

With a `reviewer` (`evo/audit/reviewer.py`, when a model is served and the run asks for reviews), a result
that passed the full audit but looks too good is read by the model; one it does not call clean is held: run
again through the backend at level `publish` and admitted only if that passes (`Reviewer.settle`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evo.audit import Level, Verdict, audit
from evo.errors import EvoError
from evo.eval.backends.base import EvalResult, Evaluator, FreshInputs, JobRunner
from evo.eval.families import InvalidJob, family_of
from evo.program import Program, Source, source_files
from evo.task import Task, load_task

if TYPE_CHECKING:
    from evo.audit.reviewer import Reviewer

ERROR_CHARS = 2000  # how much of a verdict's text a failed result keeps as its error


class Pipeline:
    """Screen, run, score and audit every candidate of one task; `workers` at a time (the backend's).

    `backend`: any evaluator (`LocalEvaluator`, `KernelEvaluator`, ...); None builds the family's default
    in `scratch` (a temporary folder when None) with `workers` and `backend_options`. `level`: the final
    audit, `full` (admission) or `publish`. `reviewer`: the model reviewer of suspicious passing results (at
    level `full` only; the engine sets it when the run asks for reviews). `close()` closes the backend too.
    """

    def __init__(self, task: Task, backend: Evaluator | None = None, *, level: Level | str = Level.FULL,
                 workers: int = 1, scratch: Path | None = None, reviewer: Reviewer | None = None,
                 **backend_options: Any):
        self.task = task
        self.reviewer = reviewer
        self.family = family_of(task)
        self.level = Level.parse(level)
        if self.level is Level.SCREEN:
            raise EvoError("the pipeline's last audit is `full` or `publish` (the screen runs before every job "
                           "anyway); pass level='full' or level='publish'")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if backend is None:
            if scratch is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="evo-pipeline-")
                scratch = Path(self._tmp.name)
            backend = self.family.backend(task, workers, Path(scratch), **backend_options)
        elif backend_options:
            raise EvoError(f"backend options ({', '.join(backend_options)}) are for the backend the pipeline "
                           "builds; give them to the backend you pass instead")
        self.backend = backend
        self.workers = backend.workers
        # Whether the backend takes jobs, read once per backend object: `isinstance` against a runtime protocol
        # looks up each of its members on every call (~7 us a candidate).
        self._runner_of: object = None
        self._runs_jobs = False
        # The audits and the scoring run here, beside the event loop: off it, and not queued behind the
        # backend's long jobs in the loop's default executor.
        self._trusted = ThreadPoolExecutor(max_workers=2, thread_name_prefix="evo-audit")
        self._screens: OrderedDict[str, Verdict] = OrderedDict()  # by `source_shape`: see `_known_screen`

    def __repr__(self) -> str:
        return f"Pipeline({self.task.name!r}, {type(self.backend).__name__}, level={self.level.value})"

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def screen(self, program: Program) -> Verdict:
        """The static screen of one candidate (a few milliseconds)."""
        return audit(program.source, Level.SCREEN, self.task)

    def _takes_jobs(self) -> bool:
        """True when the backend is a `JobRunner` (takes the job itself, not only its program)."""
        backend = self.backend
        if backend is not self._runner_of:  # the first call, or a backend set on the pipeline since
            self._runs_jobs = isinstance(backend, JobRunner)
            self._runner_of = backend
        return self._runs_jobs

    def _known_screen(self, program: Program) -> tuple[str, Verdict | None]:
        """The screen's verdict of a candidate that differs from one screened before in numbers only (a child of
        the `constants` or `params` operators, most of a run's children): no rule of the screen reads a number's
        value, so the verdict stands. Strings, names and structure all count."""
        shape = source_shape(program.source)
        verdict = self._screens.get(shape)
        if verdict is not None:
            try:
                self._screens.move_to_end(shape)
            except KeyError:  # dropped meanwhile by another thread's evaluation (`evaluate_sync` from threads)
                pass
        return shape, verdict

    def _remember(self, shape: str, verdict: Verdict) -> Verdict:
        self._screens[shape] = verdict
        while len(self._screens) > SCREEN_CACHE:
            self._screens.popitem(last=False)
        return verdict

    async def evaluate(self, program: Program, fidelity: str | None = None) -> EvalResult:
        """The candidate's result with its verdict: screened, run by the backend, scored, audited (and, with a
        reviewer, a suspicious pass reviewed and maybe held for a publish-level re-run). `fidelity`: a rung of
        the task family's (`family.fidelities`), the last (the whole evaluation) when None."""
        rung = self.family.fidelity(fidelity)
        if rung is not self.family.fidelities[-1] and not self._takes_jobs():
            raise EvoError(f"{type(self.backend).__name__} runs only the whole evaluation "
                           f"({self.family.fidelities[-1].name!r}), not the rung {rung.name!r}")
        result = await self._evaluate(program, self.level, rung.name)
        if self.reviewer is None or self.level is not Level.FULL or not result.ok or rung is not self.family.fidelities[-1]:
            return result
        reviewer = self.reviewer
        why = reviewer.triggers(result)
        if why:
            review = await reviewer.review(program.source, result, why)
            if review.held:  # never admitted on the model's word: the stricter audit on a fresh run decides
                rerun = await self._evaluate(program, Level.PUBLISH, fresh_inputs=True)
                result = reviewer.settle(review, result, rerun)
            else:
                review.outcome = "admitted"
                result.review = review.to_dict()
        if result.ok:
            reviewer.observe(result.metrics)
        return result

    async def _evaluate(self, program: Program, level: Level, fidelity: str | None = None,
                        fresh_inputs: bool = False) -> EvalResult:
        """Screen, run, score and audit at `level` (the pipeline's own, or `publish` for a held candidate), at the
        rung `fidelity` (the last when None); `fresh_inputs`: on inputs the backend has not used before, where it
        can draw them (`FreshInputs`: the kernel harness), else as any run."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        shape, screened = self._known_screen(program)
        if screened is None:
            screened = self._remember(shape, await loop.run_in_executor(self._trusted, self.screen, program))
        if not screened.passed:
            return EvalResult(False, failure="audit", error=screened.text()[:ERROR_CHARS],
                              wall_s=time.perf_counter() - start, verdict=screened.to_json())
        try:
            job = self.family.job(self.task, program, fidelity)
        except InvalidJob as e:
            result = EvalResult(False, failure="invalid", error=str(e))
        else:
            # A backend that takes jobs gets the message itself (rung, task hash); any other the program.
            backend = self.backend
            if fresh_inputs and isinstance(backend, FreshInputs):
                result = await backend.evaluate_on_fresh_inputs(job.program)
            else:
                result = await (backend.run(job) if self._takes_jobs() else backend.evaluate(job.program))
        if result.outputs is None:
            # Nothing left to score and the static checks passed in the screen: what remains is folding the
            # harness's checks in (tens of microseconds), cheaper here than a hop to a thread and back.
            return self.decide(program.source, result, screened, level)
        return await loop.run_in_executor(self._trusted, self.decide, program.source, result, screened, level)

    def decide(self, source: Source, result: EvalResult, screened: Verdict | None = None,
               level: Level | None = None) -> EvalResult:
        """The family's score and the final audit of a backend's result (on the trusted side). `screened`: the
        passed screen verdict this pipeline made of `source`, whose static checks then stand. `level`: the
        pipeline's own when None."""
        printed = result.output  # what the candidate printed goes with the result, whatever the score says
        result = self.family.score(self.task, result)
        result.output = printed
        if result.ok and result.score is None:  # a backend that answered without a score nobody gave
            result = EvalResult(False, metrics=result.metrics, failure="invalid", wall_s=result.wall_s,
                                error=f"the {self.family.name} family could not score the backend's answer",
                                checks=result.checks, report=result.report, output=printed)
        result.outputs = None  # scored: the raw outputs go no further
        checks = result.checks
        verdict = audit(source, level or self.level, self.task, {"dynamic": checks}, screened=screened)
        if result.ok and not verdict.passed:
            return EvalResult(False, metrics=result.metrics, failure="audit", error=verdict.text()[:ERROR_CHARS],
                              wall_s=result.wall_s, verdict=verdict.to_json(), checks=checks, report=result.report,
                              output=printed)
        result.checks = checks
        result.verdict = verdict.to_json()
        return result

    def evaluate_sync(self, program: Program, fidelity: str | None = None) -> EvalResult:
        """`evaluate` for a caller without an event loop (`evo eval`, `evo bench`, `evo publish`, tests)."""
        return asyncio.run(self.evaluate(program, fidelity))

    def close(self, backend: bool = True) -> None:
        """Stop the audit threads, and close the backend too unless `backend` is False (a caller's own)."""
        self._trusted.shutdown(wait=True)
        if not backend:
            return
        try:
            self.backend.close()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None


def evaluate_source(task: Task | str, source: Source, *, backend: Evaluator | None = None,
                    level: Level | str = Level.FULL, fidelity: str | None = None,
                    **backend_options: Any) -> EvalResult:
    """One program through the pipeline, synchronously, at the rung `fidelity` (the family's last when None).
    A `backend` given stays open (the caller's); one built here (from `backend_options`: workers, scratch, the
    backend's own) is closed."""
    task = load_task(task) if isinstance(task, str) else task
    pipeline = Pipeline(task, backend, level=level, **backend_options)
    try:
        return pipeline.evaluate_sync(Program(source=source), fidelity)
    finally:
        pipeline.close(backend=backend is None)


SCREEN_CACHE = 8192  # screen verdicts kept per pipeline, by source shape
# What `source_shape` keeps as it is: comments and strings (a digit inside a string is text the screen may read).
# No number literal contains `#`, a quote or a letter that prefixes a string, and no string or comment starts
# inside a number, so these spans can be found first and the numbers zeroed in the code between them. A string's
# prefix (`rb`, `f`) is left to the code between: letters, which no number rule matches. Each alternative is
# unrolled (runs of plain characters, then one escape or lone quote at a time) rather than a lazy match of one
# character at a time: the same output (tests/test_screen_cache.py holds the one-regex original to compare).
_KEPT = re.compile(r"(#[^\n]*"
                   r"|'''[^\\']*(?:(?:\\.|'(?!''))[^\\']*)*'''"
                   r'|"""[^\\"]*(?:(?:\\.|"(?!""))[^\\"]*)*"""'
                   r"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'"
                   r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*")')  # one group: what `re.split` keeps
# A number literal not part of a name (x1): decimal, float, exponent, hex/octal/binary, complex. The first
# character is matched by a class and the rest checked behind it, so that the regex engine skips to candidate
# characters instead of trying every branch at every position (twice as fast).
_NUMBER = re.compile(r"[\d.](?<![\w.][\d.])(?:(?<=0)[xXoObB][0-9a-fA-F_]+|(?<=\d)[\d_]*(?:\.[\d_]*)?(?:[eE][-+]?\d+)?"
                     r"|(?<=\.)\d[\d_]*(?:[eE][-+]?\d+)?)[jJ]?(?!\w)")
# The same pattern with ASCII classes, for an all-ASCII gap (most code): there `\d` and `\w` match the same
# characters either way, and the ASCII classes cost less to test.
_NUMBER_ASCII = re.compile(_NUMBER.pattern, re.ASCII)


_GAPS: dict[str, str] = {}  # code between strings and comments -> with its numbers zeroed (a pure function)
_GAPS_KEPT = 8192  # entries before the memo starts afresh: a child repeats all but a few of its parent's gaps


def _zero_gap(gap: str) -> str:
    zeroed = _GAPS.get(gap)
    if zeroed is None:
        if len(_GAPS) >= _GAPS_KEPT:
            _GAPS.clear()
        zeroed = _GAPS[gap] = (_NUMBER_ASCII if gap.isascii() else _NUMBER).sub("0", gap)
    return zeroed


def _zero_numbers(text: str) -> str:
    """`text` with every number literal outside strings and comments written as 0."""
    pieces = _KEPT.split(text)  # code, string or comment, code, ..., code
    pieces[::2] = map(_zero_gap, pieces[::2])
    return "".join(pieces)


def source_shape(source: Source) -> str:
    """A hash of the program's files with every number literal written as 0 (strings and comments as they are):
    equal for programs that differ in numbers only."""
    h = hashlib.sha256()
    for rel, text in sorted(source_files(source).items()):
        h.update(rel.encode() + b"\0" + _zero_numbers(text).encode() + b"\0")
    return h.hexdigest()


def verdict_of(result: EvalResult) -> Verdict | None:
    """The verdict stored on a result, as a `Verdict` (None where there is none)."""
    return Verdict.from_dict(json.loads(result.verdict)) if result.verdict else None
