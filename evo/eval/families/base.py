"""What every task family is: the `Family` base class, the `Job` it builds and the `Fidelity` rungs it owns."""

from __future__ import annotations

import ast
import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult, Evaluator
from evo.program import MAIN_FILE, Program, source_files
from evo.task import Task


@dataclass(frozen=True)
class Fidelity:
    """One rung of a family's evaluation ladder, cheapest first: its name, what it runs, and its settings.

    Data for now: a cascade that stops a candidate at the first rung it fails can use it later."""

    name: str
    what: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)


class InvalidJob(ValueError):
    """The candidate cannot be made into a job (a file path that leaves its folder): its failure, not ours."""


@dataclass(frozen=True)
class Job:
    """What a backend runs: the candidate's file contents, the task's name and its folder's hash, the rung
    and the rung's settings.

    Never a path of this machine: any backend, on any node, can run it."""

    program_id: str
    files: dict[str, str] = field(hash=False)
    task: str
    task_hash: str
    fidelity: str
    settings: dict[str, Any] = field(default_factory=dict, hash=False)  # the rung's params (budget_fraction, ...)

    @property
    def program(self) -> Program:
        """The job as the `Program` that the evaluator protocol takes."""
        source = self.files[MAIN_FILE] if set(self.files) == {MAIN_FILE} else dict(self.files)
        return Program(source=source, id=self.program_id)


_HASHES: dict[str, str] = {}
_CHECKED: set[tuple[str, int, int]] = set()  # reference.py files that passed `Family.check_reference`, as read


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level: definitions, assignments, imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def task_hash(task: Task, fresh: bool = False) -> str:
    """A hash of every file in the task's folder (computed once per process and folder; `fresh`: read again)."""
    key = str(task.root)
    if fresh or key not in _HASHES:
        h = hashlib.sha256()
        for path in sorted(p for p in Path(task.root).rglob("*") if p.is_file()):
            rel = path.relative_to(task.root)
            if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                continue
            h.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _HASHES[key] = h.hexdigest()[:32]
    return _HASHES[key]


def check_job_task(task: Task, job: Job) -> None:
    """Refuse a job built for another task, or against a folder that has changed since (its hash read again
    before refusing: the folder may have changed here since this process first hashed it)."""
    if job.task != task.name:
        raise EvoError(f"this backend runs {task.name!r}, not {job.task!r}: one backend per task")
    if job.task_hash != task_hash(task) and job.task_hash != task_hash(task, fresh=True):
        raise EvoError(f"task {job.task!r} differs here from the job's (folder hash {task_hash(task)} here, "
                       f"{job.task_hash} in the job): its folder changed since the job was built")


class Family:
    """A kind of task. Subclasses set the class attributes and implement `backend` (and `score` where the
    answer needs more than the task's `evaluate`); register an instance with `evo.eval.families.register_family`."""

    name: str = ""
    runs_on: str = ""  # where its jobs run, in words
    fidelities: tuple[Fidelity, ...] = ()
    timed: bool = False  # scores are measured times (noisy): re-measured when a run resumes
    # What the task's reference.py must define at its top level, each with what it is for: checked when the
    # task is named (`check_reference`), so a renamed function is the task's error, never a candidate's failure.
    reference_names: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    def check_reference(self, task: Task) -> None:
        """An `EvoError` naming reference.py and the fix when it is missing, does not parse, or lacks a name
        this family calls (`reference_names`). Static: nothing of the file runs here."""
        if not self.reference_names:
            return
        path = Path(task.root) / "reference.py"
        try:
            info = path.stat()
        except OSError:
            raise EvoError(f"{path}: missing; a {self.name} task's reference.py defines "
                           + "; ".join(f"`{n}` ({why})" for n, why in self.reference_names.items())) from None
        key = (str(path), info.st_mtime_ns, info.st_size)
        if key in _CHECKED:
            return
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError) as e:
            where = f" line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
            raise EvoError(f"{path}{where}: does not parse ({getattr(e, 'msg', e)}); fix the task's reference") from None
        defined = _top_level_names(tree)
        for name, why in self.reference_names.items():
            if name not in defined:
                near = difflib.get_close_matches(name, sorted(defined), n=1)
                hint = f"; did you mean `{near[0]}`?" if near else ""
                raise EvoError(f"{path}: defines no `{name}`, which the {self.name} family calls ({why}){hint}")
        _CHECKED.add(key)

    @property
    def dynamic_checks(self) -> tuple[str, ...]:
        """The dynamic checks registered in the gate for this family (all required at level `publish`)."""
        from evo.audit import DYNAMIC_CHECKS

        return tuple(name for name, check in DYNAMIC_CHECKS.items() if check.applies_to(self.name))

    def fidelity(self, name: str | None = None) -> Fidelity:
        """The rung called `name`; without a name the last one (the whole evaluation)."""
        if name is None:
            return self.fidelities[-1]
        for rung in self.fidelities:
            if rung.name == name:
                return rung
        raise KeyError(f"family {self.name} has no fidelity {name!r}; its rungs: "
                       f"{', '.join(r.name for r in self.fidelities)}")

    def backend(self, task: Task, workers: int, scratch: Path, **options: Any) -> Evaluator:
        """The backend that runs this family's jobs by default."""
        raise NotImplementedError

    def job(self, task: Task, program: Program, fidelity: str | None = None) -> Job:
        """The job of one candidate: its files (each path relative, inside its folder), the task, the rung."""
        files = source_files(program.source)
        for rel in files:
            p = PurePosixPath(rel)
            if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
                raise InvalidJob(f"file path {rel!r} leaves the program directory")
        if MAIN_FILE not in files:
            raise InvalidJob(f"the program has no {MAIN_FILE} (its files: {', '.join(sorted(files))})")
        rung = self.fidelity(fidelity)
        return Job(program.id, files, task.name, task_hash(task), rung.name, dict(rung.params))

    def score(self, task: Task, result: EvalResult) -> EvalResult:
        """The answer scored on the trusted side: raw outputs by the task's trusted `evaluate`; a result the
        backend's harness scored already (or a failure) as it is."""
        if result.outputs is None:
            return result
        from evo.eval.backends.local import score_outputs

        scored = score_outputs(task, result.outputs, result.wall_s)
        scored.checks = list(result.checks)
        scored.report = result.report
        return scored
