"""The Ray backend on a real local Ray cluster (`ray.cluster_utils.Cluster`: a head of 2 CPUs, nodes added
per test). No mocks of Ray: actors start, run candidates in the sandbox, die when killed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
from ray.cluster_utils import Cluster  # noqa: E402
from ray_fixtures import (  # noqa: E402
    FAST_HEALTH_CHECKS,
    RMSNORM_SOURCE,
    TASK,
    add_node,
    gpu_node,
    local_cluster,
    rmsnorm_on_gpu,
    seed,
    slow_seed,
)

from evo.config import RunConfig  # noqa: E402
from evo.engine import Engine  # noqa: E402
from evo.errors import EvoError  # noqa: E402
from evo.eval.backends.ray import INFRASTRUCTURE, RayEvaluator  # noqa: E402
from evo.eval.backends.ray_status import cluster_status  # noqa: E402
from evo.eval.families.base import task_hash  # noqa: E402
from evo.eval.pipeline import Pipeline  # noqa: E402
from evo.program import Program  # noqa: E402
from evo.store import Store  # noqa: E402
from evo.task import load_task  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One Ray cluster for the module: a head with 2 CPUs (actors of 1 CPU each), dead nodes seen fast."""
    with local_cluster(FAST_HEALTH_CHECKS) as c:
        yield c


def _stored_evaluations(run_dir: Path) -> int:
    """How many evaluations the store holds now (0 while it is being created)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{run_dir / 'evo.db'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def _history(run_dir: Path) -> list[tuple[str, str, float | None]]:
    """Every finished evaluation in commit order: (source, status, score)."""
    store = Store(run_dir / "evo.db", readonly=True)
    try:
        return [(store.get_program(r.program_id).text, str(r.status), r.score) for r in store.iter_evaluations()]
    finally:
        store.close()


def test_a_run_through_ray_keeps_the_same_archive_as_the_local_backend(cluster: Cluster, tmp_path: Path) -> None:
    runs = {}
    for backend in ("local", "ray"):
        config = RunConfig(task=TASK, budget=8, workers=1, seed=5, backend=backend,
                           operators={"params": 1.0, "constants": 1.0})
        engine = Engine.create(tmp_path / backend, config)
        if backend == "ray":
            assert isinstance(engine.evaluator.backend, RayEvaluator)
        stats = engine.run()
        assert stats.done == 8
        runs[backend] = _history(tmp_path / backend)
    assert len(runs["ray"]) == 8
    assert runs["ray"] == runs["local"], "same seed and budget: same programs, same scores, in the same order"
    assert any(score is not None for _, _, score in runs["ray"])


def test_an_actor_killed_mid_evaluation_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 2, tmp_path)
    pipeline = Pipeline(task, evaluator)
    try:
        assert len(evaluator.actors()) == 2

        async def main() -> object:
            job = asyncio.create_task(pipeline.evaluate(Program(source=slow_seed(3.0))))
            await evaluator.wait_until(lambda: any(m["load"] for m in evaluator.actors()))
            busy = next(m for m in evaluator._members if m.load)
            ray.kill(busy.handle, no_restart=True)
            return await job

        result = asyncio.run(main())
        expected = pipeline.evaluate_sync(Program(source=seed()))
        assert result.ok, result.error
        assert result.score == expected.score
        assert evaluator.lost == 1 and evaluator.requeued == 1 and evaluator.infrastructure_failures == 0
        # the lost actor was replaced: the pool is back to two
        assert len(evaluator.actors()) == 2
    finally:
        pipeline.close()


def test_an_engine_run_with_an_actor_killed_counts_every_evaluation_once(cluster: Cluster, tmp_path: Path) -> None:
    config = RunConfig(task=TASK, budget=12, workers=2, seed=1, backend="ray",
                       operators={"params": 1.0, "constants": 1.0})
    engine = Engine.create(tmp_path / "run", config)
    evaluator = engine.evaluator.backend
    assert isinstance(evaluator, RayEvaluator)
    killed: list[str] = []

    def tick(stats: object) -> None:  # the engine's loop calls this every 0.25 s
        busy = [m for m in evaluator._members if m.load]
        if not killed and busy:
            killed.append(busy[0].name)
            ray.kill(busy[0].handle, no_restart=True)

    stats = engine.run(on_tick=tick)
    history = _history(tmp_path / "run")
    assert killed and evaluator.lost >= 1
    assert stats.done == 12 and len(history) == 12, "the budget ends at exactly N"
    store = Store(tmp_path / "run" / "evo.db", readonly=True)
    try:
        ids = [r.program_id for r in store.iter_evaluations()]
        assert len(set(ids)) == len(ids), "nothing counted twice"
        assert INFRASTRUCTURE not in store.failure_counts()  # the job lost went to another actor
    finally:
        store.close()


def test_a_job_lost_twice_is_an_infrastructure_failure(cluster: Cluster, tmp_path: Path) -> None:
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 1, tmp_path)
    try:
        async def main() -> object:
            job = asyncio.create_task(evaluator.evaluate(Program(source=slow_seed(5.0))))
            for lost in (1, 2):  # kill whichever actor holds the job, twice
                await evaluator.wait_until(lambda: any(m.load for m in evaluator._members))
                ray.kill(evaluator._members[0].handle, no_restart=True)
                await evaluator.wait_until(lambda: evaluator.lost == lost)  # noqa: B023 - awaited here
            return await job

        result = asyncio.run(main())
        assert not result.ok and result.failure == INFRASTRUCTURE
        assert "not by the candidate" in (result.error or "")
        assert evaluator.infrastructure_failures == 1
    finally:
        evaluator.close()


def test_a_node_removed_mid_run_costs_only_time(cluster: Cluster, tmp_path: Path) -> None:
    node = add_node(cluster, {"spare": 1})
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 3, tmp_path)  # 3 CPU actors over the head (2) and the new node (1)
    try:
        on_node = [m for m in evaluator._members if m.info["node_id"] == node.node_id]
        assert len(on_node) == 1

        async def main() -> list[object]:
            jobs = [asyncio.create_task(evaluator.evaluate(Program(source=slow_seed(2.0)))) for _ in range(3)]
            await evaluator.wait_until(lambda: on_node[0].load > 0)
            cluster.remove_node(node, allow_graceful=False)
            return list(await asyncio.gather(*jobs))

        results = asyncio.run(main())
        assert all(r.ok for r in results), [r.error for r in results]
        assert evaluator.lost == 1 and evaluator.requeued == 1
    finally:
        evaluator.close()
    # Later tests must not place actors on the dead node before the cluster has noticed (Ray has no event
    # for it: its health checks decide, every 0.5 s here).
    deadline = time.monotonic() + 60
    while any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "the removed node is still alive for the cluster after 60 s"
        time.sleep(0.5)


def test_a_task_folder_that_differs_on_the_node_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    source = load_task(TASK).root
    copy = tmp_path / "tasks" / "math" / "circle_packing_26"
    shutil.copytree(source, copy)
    shutil.copy2(source.parent / "circle_packing.py", copy.parent / "circle_packing.py")
    task = load_task(str(copy))
    task_hash(task)  # what the engine's jobs carry, hashed before...
    with open(copy / "reference.py", "a") as f:  # ...the folder changes, then reaches the nodes
        f.write("\n# changed\n")
    with pytest.raises(EvoError, match="differs on node .*folder hash"):
        RayEvaluator(task, 1, tmp_path / "scratch")
    other_hash = task_hash(task, fresh=True)  # the changed folder's: not the repo's copy's
    # a job whose hash differs from an actor's copy is refused by the actor itself, never run
    good = RayEvaluator(load_task(TASK), 1, tmp_path / "scratch2")
    try:
        member = good._members[0]
        answer = ray.get(member.handle.evaluate.remote({"program_id": "x", "files": {"candidate.py": "raise SystemExit"},
                                                         "task": TASK, "task_hash": other_hash}))
        assert answer["refused"] and answer["failure"] == INFRASTRUCTURE and "differs" in answer["error"]
        assert ray.get(member.handle.stats.remote())["done"] == 0
    finally:
        good.close()


def test_a_candidate_on_a_ray_worker_cannot_reach_the_ray_head(cluster: Cluster, tmp_path: Path) -> None:
    host, port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):  # the port answers outside the sandbox
        pass
    probe = (f"import socket\n"
             f"def construct_packing():\n"
             f"    try:\n"
             f"        socket.create_connection(({host!r}, {int(port)}), timeout=5).close()\n"
             f"    except OSError as e:\n"
             f"        raise SystemExit(f'BLOCKED {{type(e).__name__}}: {{e}}')\n"
             f"    raise SystemExit('CONNECTED to the Ray head')\n")
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 1, tmp_path)
    try:
        result = asyncio.run(evaluator.evaluate(Program(source=probe)))
    finally:
        evaluator.close()
    assert not result.ok
    assert "BLOCKED" in (result.error or "") and "CONNECTED" not in (result.error or ""), result.error


def test_cluster_status_counts_nodes_and_evo_actors(cluster: Cluster, tmp_path: Path) -> None:
    evaluator = RayEvaluator(load_task(TASK), 2, tmp_path)
    try:
        status = cluster_status()
        assert any(n["alive"] and n["cpus"] >= 2 for n in status["nodes"])
        names = {a["name"] for a in status["actors"]}
        assert {m["name"] for m in evaluator.actors()} <= names
        assert status["slots"] >= 2 and status["in_flight"] == 0
    finally:
        evaluator.close()
    assert not {m["name"] for m in evaluator.actors()}


def test_without_ray_the_error_names_the_extra() -> None:
    code = ("import sys; sys.modules['ray'] = None\n"
            "from evo.eval.backends.ray import import_ray\n"
            "from evo.errors import EvoError\n"
            "try:\n    import_ray()\nexcept EvoError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'evo[cluster]'" in out


@pytest.mark.parametrize("form", ["{addr}", "ray://{addr}"])
def test_an_address_where_no_cluster_listens_is_one_line_within_seconds(tmp_path: Path, form: str) -> None:
    """Ray itself retries a dead GCS address in log lines for minutes; evo says so at once, and makes no run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused
        address = form.format(addr=addr)
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir",
                              str(tmp_path / "run"), "--budget", "4", "--backend", "ray", "--ray-address", address],
                             capture_output=True, text=True, timeout=120)
        status = subprocess.run([sys.executable, "-m", "evo", "cluster", "status", "--ray-address", address],
                                capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    for done in (run, status):
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().startswith(f"error: cannot connect to the Ray cluster at {address}: nothing answers")
    assert not (tmp_path / "run").exists()


def test_cluster_llm_start_refuses_a_restart_count_below_minus_one() -> None:
    run = subprocess.run([sys.executable, "-m", "evo", "cluster", "llm", "start", "toy", "--max-restarts", "-2"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "--max-restarts >= -1" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]


def test_evo_run_backend_ray_and_cluster_status_from_the_command_line(cluster: Cluster, tmp_path: Path) -> None:
    """What `ray job submit -- evo run ...` runs: the `evo` command, pointed at the cluster by $RAY_ADDRESS."""
    import os

    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    evo = [sys.executable, "-m", "evo"]
    run = subprocess.run([*evo, "run", TASK, "--run-dir", str(tmp_path / "run"), "--budget", "4", "--workers", "1",
                          "--backend", "ray", "--quiet"], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(_history(tmp_path / "run")) == 4
    status = subprocess.run([*evo, "cluster", "status", "--json"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    assert '"alive": true' in status.stdout and "evaluations/min" not in status.stdout


def test_a_driver_killed_with_sigkill_resumes_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    import os
    import signal

    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    evo = [sys.executable, "-m", "evo"]
    run_dir = tmp_path / "run"
    driver = subprocess.Popen([*evo, "run", TASK, "--run-dir", str(run_dir), "--budget", "40", "--workers", "2",
                               "--backend", "ray", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # Killed once the store holds 2 evaluations (polled: progress lines come every 5 s, by which time a
        # quick machine has spent the whole budget).
        deadline = time.monotonic() + 240
        while not ((run_dir / "evo.db").is_file() and _stored_evaluations(run_dir) >= 2):
            assert driver.poll() is None, "the run ended before it made progress"
            assert time.monotonic() < deadline, "the run made no progress in 240 s"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    done_before = len(_history(run_dir))
    assert 2 <= done_before < 40
    resumed = subprocess.run([*evo, "resume", str(run_dir), "--quiet"], env=env, capture_output=True, text=True,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    store = Store(run_dir / "evo.db", readonly=True)
    try:
        ids = [r.program_id for r in store.iter_evaluations()]
    finally:
        store.close()
    assert len(ids) == 40 and len(set(ids)) == 40, "exactly the budget, nothing counted twice"


def test_a_gpu_actor_runs_the_harness_on_the_gpu_ray_gave_it(cluster: Cluster, tmp_path: Path) -> None:
    """A custom resource stands in for a GPU: the actor lands on the node that has it and runs today's harness
    there (the zygote worker and its judge; Triton's interpreter without CUDA)."""
    node = gpu_node(cluster)
    task, evaluator = rmsnorm_on_gpu(tmp_path)
    pipeline = Pipeline(task, evaluator)
    try:
        assert [m.info["node_id"] for m in evaluator._members] == [node.node_id]
        source = RMSNORM_SOURCE.read_text()
        result = pipeline.evaluate_sync(Program(source=source))
        assert result.ok, result.error
        checks = {name: passed for name, passed, _ in result.checks}
        assert checks.get("dynamic:net_guard") is True and checks.get("dynamic:fs_guard") is True
    finally:
        pipeline.close()
        cluster.remove_node(node)


def test_the_run_s_training_budget_reaches_the_actors(cluster: Cluster, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`--budget-s` sets EVO_TRAIN_BUDGET_S in the driver (evo/cli/run.py); the nodes' workers were started
    before, by their raylets, and never see the driver's environment: the actors get it from the backend."""
    import os

    from evo.eval.training.spec import BUDGET_ENV

    monkeypatch.setenv(BUDGET_ENV, "7.5")

    @ray.remote(num_cpus=0)
    def seen() -> str | None:
        return os.environ.get(BUDGET_ENV)

    assert ray.get(seen.remote()) is None, "a plain Ray worker does not see the driver's setting"
    evaluator = RayEvaluator(load_task(TASK), 1, tmp_path)
    try:
        (actor,) = evaluator.actors()
        assert actor["env"] == {BUDGET_ENV: "7.5"}
        assert ray.get(evaluator._members[0].handle.stats.remote())["env"][BUDGET_ENV] == "7.5"
    finally:
        evaluator.close()
