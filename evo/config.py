"""`RunConfig`: every option of a run, with a default; read from TOML, stored with the run."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.embed import check_embedder_spec
from evo.errors import EvoError
from evo.operators import DEFAULT_WEIGHTS

DEFAULT_LLM_WEIGHTS = {"llm_diff": 1.0, "llm_rewrite": 0.3, "llm_crossover": 0.2}


@dataclass
class RunConfig:
    """Options of one run. `budget` counts finished evaluations (seeds included)."""

    task: str = "math/circle_packing_26"
    budget: int = 200
    time_limit_s: float | None = None  # wall-clock limit of one invocation (run or resume)
    workers: int = 2
    seed: int = 0
    islands: int = 2
    migration_interval: int = 50
    migrants: int = 2
    cells: str = "grid"  # "grid": task descriptors; "embedding": PCA of code embeddings + CVT
    embedding_cells: int = 64
    embedding_dims: int = 2
    embedder: str = "ngram"  # "ngram" (light default) | "minilm" | "server:URL[#model]" (/v1/embeddings)
    # cosine at or above which a proposal is a near-duplicate; None: the embedder's own default
    duplicate_threshold: float | None = None
    novelty_k: int = 10
    exploit_ratio: float = 0.7
    explore_ratio: float = 0.2
    n_inspirations: int = 3
    qd_offset: float | None = None
    max_consecutive_rejections: int = 2000
    operators: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # The model of the llm_* operators: servers "URL[#model][@weight],...", "vllm:PATH" (evo runs
    # `vllm serve PATH` for the run), "transformers:PATH" or "vllm-offline:PATH" (in process).
    llm: str | None = None
    llm_serve_args: list[str] = field(default_factory=list)  # more `vllm serve` arguments, for vllm:PATH
    llm_samples: int = 1  # children asked per LLM call (`n`)
    llm_max_tokens: int = 2048
    llm_temperature: float = 0.8
    operator_selection: str = "auto"  # "weights" | "bandit" (UCB1, weights as prior) | "auto": bandit with an LLM
    proposal_concurrency: int = 0  # operator calls at once; 0: 1 without an LLM, 2 x workers with one
    # 1: the non-LLM operators and the embedder run in a child process beside the engine's loop
    # (another core: for slow operators or embedders); 0: in the loop itself, measured faster with the
    # default ones on 2 cores (engine_overhead.py: ~540 against ~485 candidates/s).
    proposal_processes: int = 0
    # Re-time the elites when a run resumes (another session, maybe another GPU): None = kernel tasks only.
    retime_on_resume: bool | None = None
    # Where candidates run: "local" (this machine) or "ray" (a Ray cluster: evo/eval/backends/ray.py).
    backend: str = "local"
    ray_address: str | None = None  # "auto", "ray://HOST:PORT", ...; None: $RAY_ADDRESS, else a local Ray

    def __post_init__(self) -> None:
        checks = [
            (self.budget >= 1, "budget must be >= 1 (finished evaluations)"),
            (self.workers >= 1, "workers must be >= 1"),
            (self.islands >= 1, "islands must be >= 1"),
            (self.migration_interval >= 1, "migration_interval must be >= 1"),
            (self.cells in ("grid", "embedding"), f"cells must be 'grid' or 'embedding', not {self.cells!r}"),
            (self.duplicate_threshold is None or 0.0 < self.duplicate_threshold <= 1.0,
             "duplicate_threshold must be in (0, 1]"),
            (self.time_limit_s is None or self.time_limit_s > 0, "time_limit_s must be > 0"),
            (self.embedding_cells >= 2, "embedding_cells must be >= 2"),
            (self.proposal_processes in (0, 1), "proposal_processes must be 0 (operators in the engine's loop) or 1"),
            (self.operator_selection in ("auto", "weights", "bandit"),
             f"operator_selection must be 'auto', 'weights' or 'bandit', not {self.operator_selection!r}"),
            (self.backend in ("local", "ray"), f"backend must be 'local' or 'ray', not {self.backend!r}"),
            (isinstance(self.llm_serve_args, list) and all(isinstance(a, str) for a in self.llm_serve_args),
             'llm_serve_args must be a list of strings, e.g. ["--max-model-len", "16384"]'),
        ]
        for ok, message in checks:
            if not ok:
                raise EvoError(f"bad run config: {message}")
        check_embedder_spec(self.embedder)  # syntax only: the server is asked when the run starts

    def operator_weights(self) -> dict[str, float]:
        """The operators' weights; with an LLM and no llm_* weight given, the LLM operators join."""
        weights = dict(self.operators)
        if self.llm and not any(name.startswith("llm_") for name in weights):
            weights.update(DEFAULT_LLM_WEIGHTS)
        return weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EvoError(f"{source}: unknown option(s) {', '.join(unknown)}. Known: {', '.join(sorted(known))}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise EvoError(f"{source}: {e}") from e

    @classmethod
    def from_toml(cls, path: Path) -> RunConfig:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise EvoError(f"cannot read config {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise EvoError(f"config {path} is not valid TOML: {e}") from e
        return cls.from_dict(raw, source=str(path))
