"""The settings of one training evaluation, resolved on the machine that runs it.

A task's `task.toml` holds them in its `[training]` table, and the CPU smoke configuration in
`[training.cpu]`, used where the machine has no GPU (or `EVO_TRAIN_DEVICE=cpu`):

    [training]
    budget_s = 300        # the training budget, measured from outside, start-up and compilation included
    grace_s = 10          # how late after the budget the model may still arrive before the child is killed
    seq_len = 1024        # the context of the validation windows (and the model's at scoring)
    eval_tokens = 1048576 # validation tokens scored (from the start of the validation split)
    eval_batch = 16       # windows per forward call at scoring
    rescore_batches = 2   # batches scored again, shuffled, in a fresh forward process
    probe_trials = 4      # causality probe trials (batches of real validation text, spliced)
    memory_mb = 32768     # the training and forward processes' data limit

The environment overrides, on the worker's side (never paths of the engine's machine in a job):
`EVO_DATA` (the data folder: a `manifest.json` and its shards, `evo data prepare`), `EVO_TRAIN_BUDGET_S`
(the budget in seconds, what `--budget-s` sets), `EVO_TRAIN_DEVICE` (`cuda`, `cuda:1`, `cpu`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.errors import EvoError

DATA_ENV, BUDGET_ENV, DEVICE_ENV = "EVO_DATA", "EVO_TRAIN_BUDGET_S", "EVO_TRAIN_DEVICE"


@dataclass(frozen=True)
class TrainingSpec:
    """What the harness needs to train one seed and score it (plain values: it travels as JSON)."""

    data: str  # the data folder on this machine
    device: str = "cpu"
    budget_s: float = 20.0
    grace_s: float = 4.0
    seq_len: int = 128
    eval_tokens: int = 16384
    eval_batch: int = 16
    rescore_batches: int = 2
    probe_trials: int = 4
    memory_mb: int = 16384
    seed: int = 0
    startup_s: float = 60.0  # how long a child may take to connect (interpreter and torch start)
    max_weight_mb: int = 4096
    rescore_rtol: float = 1e-3  # logits of a window scored twice may differ by this times the largest logit

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def with_(self, **changes: Any) -> TrainingSpec:
        return dataclasses.replace(self, **changes)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_spec(task_root: Path, **overrides: Any) -> TrainingSpec:
    """The spec of a task on this machine: `[training]`, then `[training.cpu]` without a GPU, then the
    environment, then `overrides` (a caller's: tests, `time_to_target`)."""
    path = Path(task_root) / "task.toml"
    try:
        raw = tomllib.loads(path.read_text()).get("training", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EvoError(f"cannot read {path}: {e}") from e
    device = os.environ.get(DEVICE_ENV) or overrides.get("device") or ("cuda" if _cuda_available() else "cpu")
    settings = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    if not str(device).startswith("cuda"):
        settings.update(raw.get("cpu", {}))
    settings["device"] = device
    data = os.environ.get(DATA_ENV) or settings.get("data") or overrides.get("data")
    if os.environ.get(BUDGET_ENV):
        try:
            settings["budget_s"] = float(os.environ[BUDGET_ENV])
        except ValueError:
            raise EvoError(f"{BUDGET_ENV}={os.environ[BUDGET_ENV]!r} is not a number of seconds") from None
    settings.update({k: v for k, v in overrides.items() if k not in ("device", "data")})
    if not data:
        raise EvoError(f"task {path.parent.name}: no training data. Build it with `evo data prepare --out DIR`, "
                       f"then set {DATA_ENV}=DIR (or `data = \"DIR\"` in the [training] table of {path})")
    if not (Path(data) / "manifest.json").is_file():
        raise EvoError(f"{DATA_ENV}/[training] data = {data}: no manifest.json there; build the data with "
                       "`evo data prepare --out DIR`")
    settings["data"] = str(Path(data).resolve())
    spec = TrainingSpec.from_dict(settings)
    if spec.budget_s <= 0 or spec.seq_len < 2 or spec.eval_batch < 1 or spec.eval_tokens < spec.seq_len:
        raise EvoError(f"{path}: [training] needs budget_s > 0, seq_len >= 2, eval_batch >= 1 and "
                       f"eval_tokens >= seq_len (got {spec.budget_s}, {spec.seq_len}, {spec.eval_batch}, "
                       f"{spec.eval_tokens})")
    return spec
