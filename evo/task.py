"""The `Task` interface and the loader for `tasks/<family>/<name>/`, `$EVO_TASKS_PATH` and task folders by path.

A task folder holds:

- `task.toml`: the task's `family` (`math`, `kernels`, `training`: see `evo/eval/families/`), objective,
  metric, evaluation limits, descriptors, the `[audit]` table (see `TaskConfig`).
- `reference.py`: two functions, split by trust.
  `run_candidate(module) -> dict[str, numpy.ndarray]` runs *inside the sandbox*, next to the
  untrusted candidate: it calls the candidate's entry point and returns its raw outputs.
  `evaluate(outputs) -> dict` runs in the *trusted* process on the outputs read back from the
  sandbox; it returns `{"valid": bool, "metrics": {name: float}, "error": str | None}`,
  where `metrics` holds the task's metric and every descriptor named in `task.toml`.
- `seed.py` (or `seeds/*.py`): the naive starting program(s).
- `prompt.md`: what an LLM operator is told about the task.

`task.toml` is checked against its schema (`evo/task_schema.py`); `evo task new` writes a working folder
(`evo/task_skeleton.py`). A folder outside the repository works as well as one inside: the sandbox shows the
task's folder to its candidates (`run_sandboxed(readable=...)`).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from evo.errors import EvoError
from evo.program import Program

TASKS_ENV = "EVO_TASKS_PATH"


def tasks_roots() -> list[Path]:
    """Folders searched for tasks: `$EVO_TASKS_PATH` (colon-separated) then the repo's `tasks/`."""
    roots = [Path(p) for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p]
    roots.append(Path(__file__).resolve().parent.parent / "tasks")
    return [r for r in roots if r.is_dir()]


@dataclass(frozen=True)
class DescriptorSpec:
    """One axis of the MAP-Elites grid: a metric from `evaluate`, its range and bin count."""

    name: str
    low: float
    high: float
    bins: int = 10


@dataclass(frozen=True)
class TaskConfig:
    """`task.toml`, read once. `family` names the task family (checked against the registry of
    `evo.eval.families` by `family_of`, which says what to write when it is missing or unknown); `audit` is
    the `[audit]` table (`allow = [...]`), which the gate reads from here."""

    family: str = ""
    objective: str = "maximize"
    metric: str = "score"
    timeout_s: float = 30.0
    memory_mb: int = 2048
    max_output_mb: int = 16
    # A child replaces a cell's elite only when its score is higher by more than this fraction:
    # for measured (noisy) scores such as kernel times; 0 for exact ones.
    min_improvement: float = 0.0
    descriptors: tuple[DescriptorSpec, ...] = ()
    description: str = ""
    best_known: dict[str, float] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the task.toml it came from, for messages

    @property
    def audit_allow(self) -> tuple[str, ...]:
        """The checks and capabilities the task allows (`[audit] allow`)."""
        return tuple(str(a) for a in self.audit.get("allow", ()))

    def __post_init__(self) -> None:
        if self.objective not in ("maximize", "minimize"):
            raise EvoError(f"task.toml: objective must be 'maximize' or 'minimize', not {self.objective!r}")
        for d in self.descriptors:
            if not d.high > d.low or d.bins < 1:
                raise EvoError(f"task.toml: descriptor {d.name!r} needs high > low and bins >= 1")


@dataclass
class EvalOutcome:
    """What the trusted side concluded about one candidate's outputs."""

    valid: bool
    score: float | None  # oriented: higher is better
    metrics: dict[str, float]
    descriptors: tuple[float, ...]
    error: str | None = None


def _parse_config(path: Path) -> TaskConfig:
    """`task.toml` read and checked against its schema (`evo/task_schema.py`): one-line errors naming the key."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise EvoError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    # Imported here: the sandboxed child imports this module for `load_module` only, and pydantic costs
    # ~0.1 s to import, once per candidate.
    try:
        from evo.task_schema import check_task_file
    except ImportError:  # a GPU worker's machine may hold only torch and triton (house rule)
        return _unchecked_config(raw, path)

    f = check_task_file(raw, path)
    ev = f.evaluation
    return TaskConfig(
        family=f.family,
        objective=f.objective,
        metric=f.metric,
        timeout_s=ev.timeout_s,
        memory_mb=ev.memory_mb,
        max_output_mb=ev.max_output_mb,
        min_improvement=ev.min_improvement,
        descriptors=tuple(DescriptorSpec(d.name, d.low, d.high, d.bins) for d in f.descriptors),
        description=f.description,
        best_known=dict(f.best_known),
        audit=f.audit.model_dump(),
        path=path,
    )


def _unchecked_config(raw: dict[str, Any], path: Path) -> TaskConfig:
    """`task.toml` taken as written, where pydantic is not installed: a GPU worker, which runs only tasks that
    the engine's side checked and whose folder hash it compares with the job's."""
    ev = raw.get("evaluation", {})
    defaults = TaskConfig()
    return TaskConfig(
        family=str(raw.get("family", "")),
        objective=str(raw.get("objective", defaults.objective)),
        metric=str(raw.get("metric", defaults.metric)),
        timeout_s=float(ev.get("timeout_s", defaults.timeout_s)),
        memory_mb=int(ev.get("memory_mb", defaults.memory_mb)),
        max_output_mb=int(ev.get("max_output_mb", defaults.max_output_mb)),
        min_improvement=float(ev.get("min_improvement", defaults.min_improvement)),
        descriptors=tuple(DescriptorSpec(str(d["name"]), float(d["low"]), float(d["high"]), int(d.get("bins", 10)))
                          for d in raw.get("descriptors", [])),
        description=str(raw.get("description", "")),
        best_known={str(k): float(v) for k, v in raw.get("best_known", {}).items()},
        audit={"allow": [], **raw.get("audit", {})},
        path=path,
    )


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file as a fresh module (not cached in `sys.modules`)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EvoError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Task:
    """A problem to optimise: its config, seeds, prompt and trusted scoring."""

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = root
        self.config = _parse_config(root / "task.toml")
        self._reference: ModuleType | None = None

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    @property
    def reference_path(self) -> Path:
        return self.root / "reference.py"

    @property
    def reference(self) -> ModuleType:
        """The trusted reference module (imported once per process)."""
        if self._reference is None:
            modname = "evo_task_" + self.name.replace("/", "_")
            self._reference = load_module(self.reference_path, modname)
            sys.modules.setdefault(modname, self._reference)
        return self._reference

    @property
    def family(self) -> str:
        """The family named in `task.toml` ("" when it names none; `evo.eval.families.family_of` says more)."""
        return self.config.family

    def seed_paths(self) -> list[Path]:
        """`seed.py`, `seeds/*.py`, and for a task of the `kernels` family its Triton seed `kernels/<name>.py`
        of the repo."""
        single = self.root / "seed.py"
        many = sorted((self.root / "seeds").glob("*.py")) if (self.root / "seeds").is_dir() else []
        kernel = self.root.parent.parent.parent / "kernels" / f"{self.root.name}.py"
        if self.config.family == "kernels" and kernel.is_file():
            many.append(kernel)
        return ([single] if single.is_file() else []) + many

    def seeds(self) -> list[Program]:
        """The task's naive starting programs, as fresh `Program`s."""
        paths = self.seed_paths()
        if not paths:
            raise EvoError(f"task {self.name} has no seed.py or seeds/*.py in {self.root}")
        seeds = []
        for p in paths:
            try:
                text = p.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise EvoError(f"cannot read seed {p}: {getattr(e, 'strerror', None) or e}") from e
            seeds.append(Program(source=text, operator="seed", meta={"seed_file": p.name}))
        return seeds

    def prompt(self) -> str:
        p = self.root / "prompt.md"
        return p.read_text() if p.is_file() else self.config.description

    def orient(self, value: float) -> float:
        """Turn the raw metric into a higher-is-better score."""
        return value if self.config.objective == "maximize" else -value

    def score_outputs(self, outputs: dict[str, Any]) -> EvalOutcome:
        """Validate and score a candidate's outputs with the reference's trusted `evaluate`."""
        try:
            result = self.reference.evaluate(outputs)
        except Exception as e:  # the reference must never take the engine down with it
            return EvalOutcome(False, None, {}, (), f"validator raised {type(e).__name__}: {e}")
        metrics = {k: float(v) for k, v in dict(result.get("metrics", {})).items()}
        if not result.get("valid", False):
            return EvalOutcome(False, None, metrics, (), result.get("error") or "invalid output")
        value = metrics.get(self.config.metric)
        if value is None or not math.isfinite(value):
            return EvalOutcome(False, None, metrics, (), _unusable(metrics, self.config.metric, "`metric`"))
        descriptors = []
        for d in self.config.descriptors:
            v = metrics.get(d.name)
            if v is None or not math.isfinite(v):
                return EvalOutcome(False, None, metrics, (), _unusable(metrics, d.name, "`[[descriptors]] name`"))
            descriptors.append(v)
        return EvalOutcome(True, self.orient(value), metrics, tuple(descriptors), None)


def _unusable(metrics: dict[str, float], name: str, key: str) -> str:
    """Why a metric that task.toml names cannot be used: not finite (the candidate's doing), or absent from what
    `evaluate` returned, which is most often a name in task.toml that differs from evaluate's (the task's)."""
    if name in metrics:
        return f"{name} is {metrics[name]}, not a finite number"
    near = difflib.get_close_matches(name, sorted(metrics), n=1)
    return (f"evaluate returned no {name!r} (task.toml {key}); it returned "
            f"{', '.join(sorted(metrics)) or 'no metrics'}" + (f": did you mean `{near[0]}`?" if near else ""))


def _task_folders() -> dict[str, Path]:
    """Every task folder under the task roots by name: `group/name` for `<root>/<group>/<name>/task.toml` (the
    repo's layout), `name` for `<root>/<name>/task.toml` (what `evo task new NAME --dir <root>` writes). The
    first root that holds a name wins, as in `load_task`."""
    found: dict[str, Path] = {}
    for root in tasks_roots():
        for toml in sorted(root.glob("*/*/task.toml")) + sorted(root.glob("*/task.toml")):
            name = toml.parent.relative_to(root).as_posix()
            found.setdefault(name, toml.parent)
    return found


def list_tasks() -> list[str]:
    """Names of every task found under the task roots (`family/name`, or `name` for a task at a root's top)."""
    return sorted(_task_folders())


def scan_tasks() -> list[tuple[str, Task | EvoError]]:
    """Every task under the task roots, loaded; a broken one comes with its error instead, the others intact."""
    out: list[tuple[str, Task | EvoError]] = []
    for name, folder in sorted(_task_folders().items()):
        try:
            out.append((name, Task(name, folder.resolve())))
        except EvoError as e:
            out.append((name, e))
    return out


TASK_ROOT_META = "task_root"  # a run's meta row: the folder its task was loaded from, when the run was made


def load_run_task(name: str, root: object = None) -> Task:
    """A run's task: by its name as `load_task` finds it, else from the folder the run was made with (a task
    found then through $EVO_TASKS_PATH, which this shell may not set): the store is enough to read a run."""
    try:
        return load_task(name)
    except EvoError:
        if isinstance(root, str) and (Path(root) / "task.toml").is_file():
            return Task(name, Path(root))
        raise


def load_task(name: str) -> Task:
    """Load `family/name` (or `name`) from the task roots, or a task folder given by path."""
    direct = Path(name)
    if (direct / "task.toml").is_file():
        root = direct.resolve()
        return Task(f"{root.parent.name}/{root.name}", root)
    for root in tasks_roots():
        if (root / name / "task.toml").is_file():
            return Task(name, (root / name).resolve())
    if direct.is_dir():
        raise EvoError(f"{direct} is a folder without a task.toml: give a task folder (`evo task new NAME` "
                       "writes one) or a task name from `evo tasks`")
    if name.startswith(("/", ".", "~")):
        raise EvoError(f"{name}: no such task folder (a task folder holds a task.toml; `evo task new NAME` writes one)")
    names = list_tasks()
    ends = [n for n in names if n.rsplit("/", 1)[-1] == name]
    near = ends or difflib.get_close_matches(name, names, n=3)
    if near:
        raise EvoError(f"unknown task {name!r}; did you mean {' or '.join(f'`{n}`' for n in near)}? (`evo tasks` "
                       "lists them all)")
    known = ", ".join(names) or "none found"
    raise EvoError(f"unknown task {name!r}. Known tasks: {known}. (`evo tasks` lists them; a task folder of "
                   f"your own is given by its path, or found by name through ${TASKS_ENV}.)")
