"""Trackers: a run's figures sent to TensorBoard or MLflow as it goes (`evo run --track tensorboard|mlflow`).

The engine calls `Trackers.observe(stats, best_source)` after each finished evaluation (a few
attribute reads, then `put_nowait` on a bounded queue); a daemon thread takes the samples and
writes them to each backend. A tracker therefore never stops or slows a run: a backend that raises is
switched off (its error kept for the end-of-run report), one that is slow lets the queue fill, and
samples that find it full are dropped and counted. `close()` waits a bounded time for the queue to
drain, then reports what was written, dropped and failed.

Scalars, at step = finished evaluations: `best`, `coverage`, `qd_score`, `evals_per_min`,
`failure_rate` (failed evaluations per evaluation) and `audit_rejection_rate` (those the audit
refused, per evaluation); the best program's source is an artefact each time the best changes
(TensorBoard: a text summary `best_program` and `best_program.py` in the log folder; MLflow: the
artefact `best_program/candidate.py`).

Where: TensorBoard writes event files under `RUN_DIR/tensorboard/`; MLflow logs to
`$MLFLOW_TRACKING_URI` when set, else to a local file store at `RUN_DIR/mlruns/` (experiment
"evo", one MLflow run per `evo run`/`evo resume` invocation, named after the run directory).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from evo.errors import EvoError

if TYPE_CHECKING:
    from evo.engine import Engine
    from evo.stats import RunStats

log = logging.getLogger(__name__)
BACKENDS = ("tensorboard", "mlflow")


@dataclass(frozen=True)
class Sample:
    """The run's figures after one evaluation, in the task's units (`best` as the task reports it)."""

    step: int
    scalars: dict[str, float]
    best_id: str | None = None
    best_source: str | None = None  # set only when the best program changed


class Backend(Protocol):
    """One tracker's writer; called from the tracker thread only."""

    name: str

    def write(self, sample: Sample) -> None: ...

    def close(self) -> None: ...


class TensorBoardBackend:
    """Event files that TensorBoard reads, written with TensorBoard's own writer (no TensorFlow, no torch)."""

    name = "tensorboard"

    def __init__(self, logdir: Path):
        try:
            from tensorboard.compat.proto import (
                event_pb2,
                summary_pb2,
                tensor_pb2,
                tensor_shape_pb2,
                types_pb2,
            )
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise EvoError("--track tensorboard needs the tensorboard package: pip install 'evo[track]'") from None
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._event, self._summary = event_pb2, summary_pb2
        self._tensor, self._shape, self._types = tensor_pb2, tensor_shape_pb2, types_pb2
        self._writer = EventFileWriter(str(self.logdir))

    def write(self, sample: Sample) -> None:
        values = [self._summary.Summary.Value(tag=k, simple_value=v) for k, v in sample.scalars.items()]
        events = [self._summary.Summary(value=values)]
        if sample.best_source is not None:
            text = f"`{sample.best_id}` (evaluation {sample.step})\n\n    " + sample.best_source.replace("\n", "\n    ")
            events.append(self._text_summary("best_program", text))
            (self.logdir / "best_program.py").write_text(sample.best_source)
        for summary in events:
            self._writer.add_event(self._event.Event(wall_time=time.time(), step=sample.step, summary=summary))

    def _text_summary(self, tag: str, text: str) -> object:
        """A summary that TensorBoard's text plugin shows (its own `pb` helper needs TensorFlow)."""
        tensor = self._tensor.TensorProto(dtype=self._types.DT_STRING, string_val=[text.encode()],
                                          tensor_shape=self._shape.TensorShapeProto())
        meta = self._summary.SummaryMetadata(plugin_data=self._summary.SummaryMetadata.PluginData(plugin_name="text"))
        return self._summary.Summary(value=[self._summary.Summary.Value(tag=tag, metadata=meta, tensor=tensor)])

    def close(self) -> None:
        self._writer.close()


class MLflowBackend:
    """One MLflow run per invocation: metrics by step, the best program as an artefact."""

    name = "mlflow"

    def __init__(self, run_dir: Path, tracking_uri: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise EvoError("--track mlflow needs the mlflow package: pip install 'evo[track]' "
                           "(or mlflow-skinny)") from None
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(run_dir) / "mlruns").resolve().as_uri()
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless told: a run's own local
            # folder is what evo asks for (no server, no database to set up).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name("evo")
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("evo")
        self.run_id: str = self.client.create_run(exp_id, run_name=Path(run_dir).resolve().name,
                                                  tags={"evo.run_dir": str(Path(run_dir).resolve())}).info.run_id

    def write(self, sample: Sample) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, sample.step) for k, v in sample.scalars.items()])
        if sample.best_source is not None:
            self.client.log_text(self.run_id, sample.best_source, "best_program/candidate.py")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def scalars(stats: RunStats, orient: Callable[[float], float]) -> dict[str, float]:
    """The tracked scalars of a run's live figures (`orient` turns the engine's score into the task's value)."""
    done = max(stats.done, 1)
    out = {"coverage": float(stats.coverage), "qd_score": float(stats.qd_score),
           "evals_per_min": float(stats.evals_per_minute),
           "failure_rate": sum(stats.failures.values()) / done, "audit_rejection_rate": stats.failures["audit"] / done}
    if stats.best_score is not None:
        out["best"] = float(orient(stats.best_score))
    return out


def check_installed(name: str) -> None:
    """Fail before the run starts when a tracker's package is missing (building one may wait on a server,
    so that happens in the tracker thread)."""
    import importlib.util

    module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(name)
    if module is None:
        raise EvoError(f"unknown tracker {name!r}; known: {', '.join(BACKENDS)}")
    if importlib.util.find_spec(module) is None:
        raise EvoError(f"--track {name} needs the {module} package: pip install 'evo[track]'")


def make_backend(name: str, run_dir: Path) -> Backend:
    """A backend by name (`BACKENDS`)."""
    if name == "tensorboard":
        return TensorBoardBackend(Path(run_dir) / "tensorboard")
    if name == "mlflow":
        return MLflowBackend(run_dir)
    raise EvoError(f"unknown tracker {name!r}; known: {', '.join(BACKENDS)}")


@dataclass
class TrackerReport:
    """What the trackers did over one invocation."""

    written: int = 0
    dropped: int = 0  # samples that found the queue full (a slow backend): never waited for
    failed: dict[str, str] = field(default_factory=dict)  # backend -> the error that switched it off
    left: int = 0  # samples still queued when close() stopped waiting

    def line(self) -> str:
        text = f"trackers: {self.written} samples written, {self.dropped} dropped (queue full)"
        if self.left:
            text += f", {self.left} not written at the end (the tracker was still busy)"
        for name, err in self.failed.items():
            text += f"; {name} switched off: {err}"
        return text


class Trackers:
    """The run's trackers behind one bounded queue and one thread. `observe` never blocks."""

    def __init__(self, backends: Sequence[Callable[[], Backend]], *, maxsize: int = 1000, every_s: float = 0.5):
        """`backends`: how to build each one; they are built in the tracker thread, so that one that waits
        on a server (MLflow's) delays nothing but itself."""
        self._factories = list(backends)
        self.backends: list[Backend] = []
        self.every_s = every_s
        self.report = TrackerReport()
        self._queue: queue.Queue[Sample | None] = queue.Queue(maxsize=maxsize)
        self._last_put = -math.inf
        self._last_best: str | None = None
        self._last_step = -1
        self._thread = threading.Thread(target=self._drain, name="evo-trackers", daemon=True)
        self._thread.start()

    @classmethod
    def for_run(cls, names: Sequence[str], run_dir: Path) -> Trackers | None:
        """The trackers named in the run's config (None when none is)."""
        if not names:
            return None
        for n in names:
            check_installed(n)
        return cls([functools.partial(make_backend, n, run_dir) for n in dict.fromkeys(names)])

    def observe(self, step: int, scalars: Callable[[], dict[str, float]], best_id: str | None,
                best_source: Callable[[], str | None], *, force: bool = False) -> None:
        """Offer the run's state after evaluation `step`: kept at most every `every_s` seconds, and always when
        the best program changed (then with its source) or `force`. Never waits: a full queue drops it."""
        changed = best_id is not None and best_id != self._last_best
        now = time.monotonic()
        if not (changed or force or now - self._last_put >= self.every_s) or step == self._last_step and not changed:
            return
        try:
            sample = Sample(step, scalars(), best_id, best_source() if changed else None)
        except Exception as e:  # noqa: BLE001 - reading the figures must never stop the run
            self.report.failed.setdefault("observe", repr(e)[:300])
            return
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            self.report.dropped += 1
            return
        self._last_put, self._last_step = now, step
        if changed:
            self._last_best = best_id

    def observe_engine(self, engine: Engine, *, force: bool = False) -> None:
        """`observe` the engine's live figures (what the engine calls after each recorded evaluation)."""
        stats = engine.stats
        best = stats.best_id
        self.observe(stats.done, lambda: scalars(stats, engine.task.orient), best,
                     lambda: None if best is None else engine.program(best).text, force=force)

    def _drain(self) -> None:
        for build in self._factories:
            try:
                self.backends.append(build())
            except Exception as e:  # noqa: BLE001 - a tracker that cannot start is reported, the run goes on
                name = getattr(build, "args", ("tracker",))[0]
                self.report.failed[str(name)] = f"{type(e).__name__}: {e}"[:300]
                log.warning("tracker %s could not start and is switched off: %s", name, e)
        while (sample := self._queue.get()) is not None:
            for backend in list(self.backends):
                try:
                    backend.write(sample)
                except Exception as e:  # noqa: BLE001 - a broken tracker is switched off, the run goes on
                    self.report.failed[backend.name] = f"{type(e).__name__}: {e}"[:300]
                    self.backends.remove(backend)
                    log.warning("tracker %s failed and is switched off: %s", backend.name, e)
            self.report.written += 1

    def close(self, timeout_s: float = 5.0) -> TrackerReport:
        """Stop the thread after what is queued (waiting at most `timeout_s`), close the backends, report."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():  # a backend stuck in a write: leave it (a daemon thread), say so
            self.report.left = self._queue.qsize()
            return self.report
        for backend in self.backends:
            try:
                backend.close()
            except Exception as e:  # noqa: BLE001
                self.report.failed[backend.name] = f"{type(e).__name__}: {e}"[:300]
        return self.report
