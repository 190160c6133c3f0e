"""`RunConfig`: every option of a run, with a default; read from TOML, stored with the run.

The options are validated with pydantic (strict types: TOML's `budget = "10"` is an error, not a
silent 10) from the dataclass's own annotations, so the field list is written once. Every mistake
becomes one `EvoError` line that names where the value came from, the key, what was expected and
the fix; unknown keys get a "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field
from pydantic_core import ErrorDetails

from evo.embed import check_embedder_spec
from evo.errors import EvoError
from evo.operators import DEFAULT_WEIGHTS, OPERATORS

DEFAULT_LLM_WEIGHTS = {"llm_diff": 1.0, "llm_rewrite": 0.3, "llm_crossover": 0.2}


@dataclass
class RunConfig:
    """Options of one run. `budget` counts finished evaluations (seeds included)."""

    task: str = "math/circle_packing_26"
    budget: Annotated[int, Field(ge=1)] = 200
    # Wall-clock limit of one invocation (run or resume): never stored with the run.
    time_limit_s: Annotated[float, Field(gt=0)] | None = None
    workers: Annotated[int, Field(ge=1)] = 2
    # Training tasks: the training budget (lm_budget) or the cap per seed (time_to_target) in seconds, instead of
    # the task's `budget_s`. Stored with the run (its scores depend on it): `evo resume` keeps it.
    train_budget_s: Annotated[float, Field(gt=0)] | None = None
    seed: int = 0
    islands: Annotated[int, Field(ge=1)] = 2
    migration_interval: Annotated[int, Field(ge=1)] = 50
    migrants: Annotated[int, Field(ge=0)] = 2
    cells: Literal["grid", "embedding"] = "grid"  # "grid": task descriptors; "embedding": PCA of code embeddings + CVT
    embedding_cells: Annotated[int, Field(ge=2)] = 64
    embedding_dims: Annotated[int, Field(ge=1)] = 2
    embedder: str = "ngram"  # "ngram" (light default) | "minilm" | "server:URL[#model]" (/v1/embeddings)
    # cosine at or above which a proposal is a near-duplicate; None: the embedder's own default
    # (ngram 0.9999, minilm 0.9999995: see evo.embed), since each embedder spreads one-literal changes differently
    duplicate_threshold: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    novelty_k: Annotated[int, Field(ge=1)] = 10
    exploit_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    explore_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    n_inspirations: Annotated[int, Field(ge=0)] = 3
    # QD-score offset in the task's own units (a bound no program is worse than); None: the worst valid
    # value seen, so that every elite counts >= 0 for minimised tasks and negative scores too
    qd_offset: float | None = None
    max_consecutive_rejections: Annotated[int, Field(ge=1)] = 2000
    operators: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # The model of the llm_* operators: servers "URL[#model][@weight],...", "vllm:PATH" (evo runs
    # `vllm serve PATH` for the run), "transformers:PATH" or "vllm-offline:PATH" (in process).
    llm: str | None = None
    llm_serve_args: list[str] = field(default_factory=list)  # more `vllm serve` arguments, for vllm:PATH
    llm_samples: Annotated[int, Field(ge=1)] = 1  # children asked per LLM call (`n`)
    llm_max_tokens: Annotated[int, Field(ge=1)] = 2048
    llm_temperature: Annotated[float, Field(ge=0.0)] = 0.8
    # "weights" | "bandit" (UCB1, weights as prior) | "auto": bandit with an LLM
    operator_selection: Literal["auto", "weights", "bandit"] = "auto"
    # operator calls at once; 0: 1 without an LLM, 2 x workers with one
    proposal_concurrency: Annotated[int, Field(ge=0)] = 0
    # 1: the non-LLM operators and the embedder run in a child process beside the engine's loop
    # (another core: for slow operators or embedders); 0: in the loop itself, measured faster with the
    # default ones on 2 cores (engine_overhead.py: ~540 against ~485 candidates/s).
    proposal_processes: Literal[0, 1] = 0
    # Re-time the elites when a run resumes (another session, maybe another GPU): None = kernel tasks only.
    retime_on_resume: bool | None = None
    # Where candidates run: "local" (this machine) or "ray" (a Ray cluster: evo/eval/backends/ray.py).
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # "auto", "ray://HOST:PORT", ...; None: $RAY_ADDRESS, else a local Ray
    # More seeds beside the task's own, read when the run is created (evo/seeding/: a file, a folder, a git
    # repository at a commit, an export, a run directory's elites, a published archive).
    seed_from: list[str] = field(default_factory=list)
    # A baseline that keeps a search honest (same budget, same operators): "best-of-n" makes every child
    # from the seeds only (no archive parents); "random-parent" draws parents uniformly among all valid
    # programs (no MAP-Elites selection). "none": the search itself.
    ablation: Literal["none", "best-of-n", "random-parent"] = "none"
    # Trackers that the run's figures and best program are sent to as it goes (evo/report/track.py):
    # "tensorboard" (RUN_DIR/tensorboard/), "mlflow" ($MLFLOW_TRACKING_URI, else RUN_DIR/mlruns/).
    track: list[Literal["tensorboard", "mlflow"]] = field(default_factory=list)
    # A lesson (evo/lessons.py: what helped, what fails, what is unexplored) is written every this many
    # evaluations and when the run resumes, by the model when one is served; 0: never.
    lessons_every: Annotated[int, Field(ge=0)] = 200
    # A run directory whose newest lessons this run starts with (read when the run is created).
    lessons_from: str | None = None
    # The model reviewer (evo/audit/reviewer.py): with a model (`llm`), a result that passed the audit but looks
    # too good is read by the model; one it does not call clean is re-run at the publish-level audit before admission.
    review: bool = False

    def __post_init__(self) -> None:
        # Built in code (tests, benchmarks) or from a file: the same checks either way.
        validate_options(self.to_dict(), "bad run config")

    def operator_weights(self) -> dict[str, float]:
        """The operators' weights; with an LLM and no llm_* weight given, the LLM operators join."""
        weights = dict(self.operators)
        if self.llm and not any(name.startswith("llm_") for name in weights):
            weights.update(DEFAULT_LLM_WEIGHTS)
        return weights

    def to_dict(self) -> dict[str, Any]:
        """Every option, as stored in the run's meta and written to TOML."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> RunConfig:
        """A config from `raw` (missing keys take their default); errors name `source`."""
        return cls(**validate_options(raw, source))

    @classmethod
    def from_toml(cls, path: Path) -> RunConfig:
        """A config from a TOML file of run options; every error names the file."""
        return cls(**read_options(path))


def read_options(path: Path) -> dict[str, Any]:
    """The options a TOML file sets (validated; only the keys it has), e.g. for `evo resume --config`."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise EvoError(f"cannot read config {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise EvoError(f"config {path} is not UTF-8 text: {e.reason}") from e
    except tomllib.TOMLDecodeError as e:
        raise EvoError(f"config {path} is not valid TOML: {e}") from e
    return validate_options(raw, str(path), whole=False)


def validate_options(raw: Mapping[str, Any], source: str, whole: bool = True) -> dict[str, Any]:
    """Check run options (a subset of the keys is fine): types, ranges, unknown keys, operators, embedder.

    Returns the given options with their values converted as the dataclass holds them (an integer
    where a float is expected becomes a float). Raises one `EvoError` naming `source`, the key, what
    was expected and the fix. `whole=False` for a part of the options (a config file that command-line flags
    complete, a resume's changes): checks that need the other options (LLM operators need a model) wait for
    the whole config.
    """
    known = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = [k for k in raw if k not in known]
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, n=1)) else repr(k)
                 for k in unknown]
        raise EvoError(f"{source}: unknown option(s) {', '.join(unknown)}: {', '.join(hints)}. "
                       f"Known: {', '.join(sorted(known))}")
    try:
        model = _schema().model_validate(dict(raw))
    except pydantic.ValidationError as e:
        raise EvoError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from None
    values = {k: getattr(model, k) for k in raw}
    if "operators" in values or "llm" in values:
        defaults = RunConfig.__dataclass_fields__
        operators = values.get("operators", defaults["operators"].default_factory())  # type: ignore[misc]
        _check_operators(operators, values.get("llm"), source, whole)
    if values.get("review") and whole and not raw.get("llm"):
        raise EvoError(f"{source}: review = true needs a model to review with: give --llm URL (or llm = \"URL\" "
                       "in the config), or set review = false")
    if isinstance(values.get("llm"), str) and not values["llm"].strip():
        raise EvoError(f"{source}: llm is empty; give a model (e.g. --llm http://127.0.0.1:8000), or leave it out "
                       "for a run without the LLM operators")
    if whole and values.get("ray_address") and values.get("backend", "local") != "ray":
        raise EvoError(f"{source}: ray_address {values['ray_address']!r} is for the Ray backend, and the backend is "
                       "local: add --backend ray (backend = \"ray\"), or leave the address out")
    if "embedder" in values:
        try:
            check_embedder_spec(values["embedder"])  # syntax only: the server is asked when the run starts
        except EvoError as e:
            raise EvoError(f"{source}: embedder: {e}") from None
    return values


@functools.cache
def _schema() -> type[pydantic.BaseModel]:
    """A strict pydantic model of the dataclass's fields (built once, on first use)."""
    hints = typing.get_type_hints(RunConfig, include_extras=True)
    fields: dict[str, Any] = {f.name: (hints[f.name], None) for f in dataclasses.fields(RunConfig)}
    return pydantic.create_model("RunOptions", __config__=pydantic.ConfigDict(strict=True, extra="forbid"),
                                 **fields)


_EXPECTED = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a table of name = value",
    "finite_number": "a finite number",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _describe(err: ErrorDetails) -> str:
    """One pydantic error as 'key must be X, got Y (e.g. key = default)'."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    kind = err["type"]
    if kind in _BOUNDS:
        bound = next(iter((err.get("ctx") or {}).values()), "?")
        expected = f"{_BOUNDS[kind]} {bound}"
    else:
        expected = _EXPECTED.get(kind) or str(err["msg"]).removeprefix("Input should be ")
    text = f"{key} must be {expected}, got {err['input']!r}"
    top = RunConfig.__dataclass_fields__.get(loc[0]) if loc else None
    if top is not None and len(loc) == 1 and isinstance(top.default, (int, float, str)):
        text += f" (e.g. {key} = {json.dumps(top.default)}, the default)"
    return text


def _check_operators(weights: Mapping[str, float], llm: str | None, source: str, whole: bool = True) -> None:
    """Operator names the registry knows (or llm_<mode>), finite non-negative weights, one positive."""
    from evo.operators.llm import MODES  # the LLM stack only when a config is checked

    llm_names = [f"llm_{mode}" for mode in MODES]
    known = [*OPERATORS, *llm_names]
    for name, weight in weights.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EvoError(f"{source}: unknown operator {name!r} in [operators]{hint}; known operators: "
                           f"{', '.join(known)}")
        if not math.isfinite(weight) or weight < 0:
            raise EvoError(f"{source}: the weight of operator {name!r} must be a finite number >= 0, got {weight!r}"
                           " (0 switches it off)")
    if weights and sum(weights.values()) <= 0:
        raise EvoError(f"{source}: the operator weights {dict(weights)} sum to 0; give at least one operator "
                       "a positive weight")
    if not weights and not llm and whole:
        raise EvoError(f"{source}: [operators] is empty; give at least one operator a weight, e.g. constants = 1.0")
    llm_ops = [n for n in weights if n in llm_names and weights[n] > 0]
    if llm_ops and not llm and whole:
        raise EvoError(f"{source}: the operators {', '.join(llm_ops)} need a model: give --llm URL "
                       "(or llm = \"URL\" in the config), or set their weights to 0")
