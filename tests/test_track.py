"""`evo run --track tensorboard --track mlflow`: the figures and the best program, read back with TensorBoard's
own reader and MLflow's client on a local file store; a tracker that fails or hangs never stops the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from report_run import ROOT

SCALARS = {"best", "coverage", "qd_score", "evals_per_min", "failure_rate", "audit_rejection_rate"}
BUDGET = 24

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[dev]')")
pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", str(run_dir),
                           "--budget", str(BUDGET), "--track", "tensorboard", "--track", "mlflow", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "trackers: " in proc.stderr and "0 dropped" in proc.stderr  # the end-of-run report
    return run_dir


def test_tensorboard_event_files(tracked: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    import evo

    acc = ea.EventAccumulator(str(tracked / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == SCALARS
    with evo.load(tracked) as run:
        best = run.best(1, ["id", "value"])
        best_id, best_value = best["id"].iloc[0], best["value"].iloc[0]
        source = run.source(best_id)
        failed = int((~run.evaluations()["ok"]).sum())
    steps = [e.step for e in acc.Scalars("best")]
    assert steps == sorted(steps) and steps[-1] == BUDGET  # the last sample is the run's end
    assert acc.Scalars("best")[-1].value == pytest.approx(best_value, rel=1e-6)
    assert acc.Scalars("failure_rate")[-1].value == pytest.approx(failed / BUDGET, rel=1e-6)
    assert 0 < acc.Scalars("coverage")[-1].value <= 1
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("best_program")]
    assert best_id in texts[-1] and source.splitlines()[3] in texts[-1]
    assert (tracked / "tensorboard" / "best_program.py").read_text() == source


def test_mlflow_file_store(tracked: Path) -> None:
    from mlflow.tracking import MlflowClient

    import evo

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks this for a local folder
    client = MlflowClient(tracking_uri=(tracked / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("evo")
    assert exp is not None
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == "run"
    assert SCALARS <= set(mrun.data.metrics)
    with evo.load(tracked) as run:
        best = run.best(1, ["id", "value"])
        source = run.source(best["id"].iloc[0])
    history = client.get_metric_history(mrun.info.run_id, "best")
    assert max(m.step for m in history) == BUDGET
    assert history[-1].value == pytest.approx(best["value"].iloc[0], rel=1e-6)
    path = client.download_artifacts(mrun.info.run_id, "best_program/candidate.py", str(tracked / "dl"))
    assert Path(path).read_text() == source


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A tracking server that accepts connections and never answers: the slowest tracker there is."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_a_hanging_tracker_drops_and_never_waits(silent_server: str, tmp_path: Path) -> None:
    from evo.report.track import MLflowBackend, Trackers

    trackers = Trackers([lambda: MLflowBackend(tmp_path, tracking_uri=silent_server)], maxsize=4)
    start = time.perf_counter()
    for step in range(1, 201):
        trackers.observe(step, lambda: {"best": 1.0}, None, lambda: None, force=True)
    offered_s = time.perf_counter() - start
    assert offered_s < 0.5, offered_s  # 200 offers, none of them waited on the server
    report = trackers.close(timeout_s=1.0)
    assert report.dropped >= 196 - 1 and report.written == 0 and report.left >= 1
    assert "dropped" in report.line()


def test_a_failing_tracker_is_switched_off_and_the_run_goes_on(tmp_path: Path) -> None:
    """MLflow pointed at a closed port (no retries): the tracker fails, the run spends its whole budget."""
    run_dir = tmp_path / "run"
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.run([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", str(run_dir),
                           "--budget", "8", "--track", "mlflow", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "mlflow switched off" in proc.stderr
    import evo

    with evo.load(run_dir) as run:
        assert run.n_evaluations == 8
        (report,) = run.events("trackers")["data"]
    assert "mlflow" in report["failed"]


def test_unknown_tracker_and_missing_option() -> None:
    proc = subprocess.run([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", "/nonexistent/x",
                           "--track", "wandb"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "wandb" in proc.stderr
