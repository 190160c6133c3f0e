"""Reaching the Ray cluster, for the Ray backend's modules (`ray.py`, `ray_actor.py`, `ray_llm.py`,
`ray_status.py`): Ray imported with an error that names the extra, the driver's connection (evo's own code
shipped with it), what of a task every node gets, and the simulated evaluations of `benchmarks/scale.py`."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from types import ModuleType

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.task import Task

NAMESPACE = "evo"  # the namespace of evo's named actors: `evo cluster status` finds them there
# The run's settings one machine hands its evaluators through the environment (evo/cli/run.py sets them):
# forwarded to every actor, on every node. Node-local ones (EVO_DATA, EVO_TRAIN_DEVICE, paths) are not.
RUN_ENV = ("EVO_TRAIN_BUDGET_S",)
_EVO_PACKAGE = Path(__file__).resolve().parents[2]


def import_ray() -> ModuleType:
    """The `ray` module, or an `EvoError` that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise EvoError("the Ray backend needs Ray, which is not installed: pip install 'evo[cluster]'") from e
    return ray


def connect(address: str | None = None, ship_code: bool = True) -> ModuleType:
    """Connect this process to a Ray cluster (`address`, else $RAY_ADDRESS, else a Ray started here), once.
    `ship_code`: evo's own code travels to every node with this driver's job (nodes need only Ray and evo's
    dependencies); a driver that runs no actors (`evo cluster status`) sends nothing."""
    ray = import_ray()
    if not ray.is_initialized():
        _check_reachable(address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS"))
        env = {"py_modules": [str(_EVO_PACKAGE)], "excludes": ["__pycache__", "*.pyc"]} if ship_code else None
        try:
            # log_to_driver=False: the actors' output stays in the nodes' Ray logs instead of breaking the
            # engine's live display; what a job printed comes back in its answer.
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=env)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "$RAY_ADDRESS"
            raise EvoError(f"cannot connect to the Ray cluster at {where}: {str(e).strip().rstrip('.')}. Start one with `ray start --head` "
                           "(and `ray start --address HEAD:6379` on each other node), then pass --ray-address "
                           "auto or ray://HEAD:10001") from e
    return ray


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """One line within seconds when nothing listens at a cluster's HOST:PORT (or ray://HOST:PORT): `ray.init`
    would retry the head's GCS in its own log lines for minutes. "auto", "local" and no address are Ray's."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # a form Ray reads its own way: its error, if any
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        what = "a Ray client server (ray://, port 10001 by default)" if address.startswith("ray://") else \
            "a Ray head (its GCS port, 6379 by default)"
        raise EvoError(f"cannot connect to the Ray cluster at {address}: nothing answers there as {what} "
                       f"({e.strerror or e}). Start one with `ray start --head`, or give the head's address") from None


def task_files(task: Task) -> dict[str, bytes]:
    """What every node gets of the task, by path under a `tasks/` folder: the task's folder and the loose files
    of its family's folder (shared modules such as `tasks/math/circle_packing.py` that a reference imports)."""
    files: dict[str, bytes] = {}
    root = Path(task.root)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in rel.parts):
            files[f"{task.name}/{rel.as_posix()}"] = path.read_bytes()
    family = task.name.rsplit("/", 1)[0] if "/" in task.name else ""
    for shared in sorted(root.parent.iterdir()):
        if shared.is_file() and shared.suffix == ".py":
            files[f"{family}/{shared.name}".lstrip("/")] = shared.read_bytes()
    return files


def simulated_result(source: object, seconds: float, ranges: list[tuple[float, float]]) -> EvalResult:
    """A made-up result for a source, the same on every call: a score in [0, 1) and descriptors inside
    `ranges` (the simulated evaluators of `benchmarks/scale.py`)."""
    digest = hashlib.sha256(repr(source).encode()).digest()
    fractions = [b / 256 for b in digest]
    descriptors = tuple(lo + (hi - lo) * fractions[1 + i] for i, (lo, hi) in enumerate(ranges))
    return EvalResult(True, score=fractions[0], descriptors=descriptors, wall_s=seconds)


def disconnect() -> None:
    """Leave the Ray cluster this process connected to (`connect`); a Ray started here stops."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()


def first_line(error: BaseException) -> str:
    """An error's type and first line, short: for logs and messages."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
