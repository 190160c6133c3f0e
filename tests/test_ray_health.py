"""GPU health and LLM replicas on a real local Ray cluster (`ray.cluster_utils.Cluster`), custom resources
standing in for GPUs. The GPU faults are really caused: a node started with `EVO_GPU_FAULT_FILE` in its
environment (as `ray start` on a node would pass it) fails its probe once the file says so. The LLM replicas
are real HTTP servers started by Ray actors, one killed mid-use."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
from ray.cluster_utils import Cluster  # noqa: E402
from ray_fixtures import FAST_HEALTH_CHECKS, GPU, TASK, gpu_node, local_cluster, seed, slow_seed  # noqa: E402

from evo.eval.backends.gpu_health import FAULT_ENV  # noqa: E402
from evo.eval.backends.ray import INFRASTRUCTURE, RayEvaluator  # noqa: E402
from evo.eval.backends.ray_llm import replica_endpoints, start_replicas, stop_replicas  # noqa: E402
from evo.eval.backends.ray_status import cluster_status  # noqa: E402
from evo.eval.pipeline import Pipeline  # noqa: E402
from evo.llm.client import LLMClient  # noqa: E402
from evo.program import Program  # noqa: E402
from evo.task import load_task  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
CUDA_FAILURE = ("def construct_packing():\n"
                "    raise RuntimeError('CUDA error: an illegal memory access was encountered')\n")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster(FAST_HEALTH_CHECKS) as c:
        yield c


def _gpu_node(cluster: Cluster, fault_file: Path | None = None) -> object:
    """A node with one stand-in GPU; with `fault_file`, its workers' environment names it (the probe reads it)."""
    return gpu_node(cluster, {FAULT_ENV: str(fault_file)} if fault_file is not None else None)


def _status_of(name: str) -> dict[str, object]:
    return next(a for a in cluster_status()["actors"] if a["name"] == name)


def test_a_gpu_that_fails_its_probe_at_start_is_drained_and_reported(cluster: Cluster, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("error")
    sick, well = _gpu_node(cluster, fault), _gpu_node(cluster)
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 1, tmp_path / "scratch", kind="gpu", gpu_resource=GPU, slots_per_actor=1,
                             reprobe_s=(0.5, 1.0))
    pipeline = Pipeline(task, evaluator)
    try:
        assert [m.info["node_id"] for m in evaluator._members] == [well.node_id]
        (name, why), = evaluator.drained.items()
        assert "CUDA error" in why and FAULT_ENV in why
        result = pipeline.evaluate_sync(Program(source=seed()))
        assert result.ok, result.error
        drained = _status_of(name)
        assert drained["health"] == "drained" and "CUDA error" in str(drained["drained_reason"])
        assert drained["done"] == 0 and drained["node_id"] == sick.node_id
        healthy = _status_of(evaluator._members[0].name)
        assert healthy["health"] == "healthy" and healthy["done"] == 1
        assert name in cluster_status()["drained"]
        # Probed again after its back-off while the fault holds: still drained. Cleared: back, its harness started.
        asyncio.run(evaluator.wait_until(lambda: evaluator.reprobes >= 1))
        assert name in evaluator.drained and evaluator.restored == 0
        fault.write_text("")
        asyncio.run(evaluator.wait_until(lambda: evaluator.restored == 1))
        assert {m.info["node_id"] for m in evaluator._members} == {well.node_id, sick.node_id}
        assert not evaluator.drained and _status_of(name)["health"] == "healthy"
    finally:
        pipeline.close()
        cluster.remove_node(sick)
        cluster.remove_node(well)


def test_a_gpu_found_sick_mid_run_is_drained_and_its_jobs_move_once(cluster: Cluster, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    fault.write_text("")
    sick = _gpu_node(cluster, fault)
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 2, tmp_path / "scratch", kind="gpu", gpu_resource=GPU, slots_per_actor=2)
    pipeline = Pipeline(task, evaluator)
    added: list[object] = []
    try:
        (first,) = evaluator._members
        expected = pipeline.evaluate_sync(Program(source=seed()))

        async def main() -> list[object]:
            slow = asyncio.create_task(pipeline.evaluate(Program(source=slow_seed(6.0))))
            await evaluator.wait_until(lambda: first.load == 1)
            failing = asyncio.create_task(pipeline.evaluate(Program(source=CUDA_FAILURE)))
            await evaluator.wait_until(lambda: first.load == 2)
            fault.write_text("error")  # the GPU goes bad with two jobs on it
            await evaluator.wait_until(lambda: bool(evaluator.drained))
            # Both jobs wait for another GPU; one joins, and the actor asked for in the sick one's place starts.
            added.append(_gpu_node(cluster))
            return list(await asyncio.gather(slow, failing))

        slow_result, failing_result = asyncio.run(main())
        assert slow_result.ok and slow_result.score == expected.score, slow_result.error
        # the failure stays the candidate's: the GPU it ran on last passed its probe
        assert failing_result.failure == "error" and "illegal memory access" in (failing_result.error or "")
        assert evaluator.requeued == 2 and evaluator.infrastructure_failures == 0
        assert list(evaluator.drained) == [first.name]
        drained = _status_of(first.name)
        assert drained["health"] == "drained" and drained["done"] == 1  # the seed, before the fault
        (second,) = evaluator._members
        assert second.info["node_id"] == added[0].node_id  # type: ignore[attr-defined]
        assert _status_of(second.name)["done"] == 2 and _status_of(second.name)["health"] == "healthy"
        assert all(r.failure != INFRASTRUCTURE for r in (slow_result, failing_result))
    finally:
        pipeline.close()
        for node in [sick, *added]:
            cluster.remove_node(node)


def test_a_drained_gpu_returns_to_service_once_its_probe_passes_again(cluster: Cluster, tmp_path: Path) -> None:
    """The GPU goes bad (the fault file says so) under a job: drained, probed again after the back-off (and
    found still sick while the file holds), back in the pool once the file is cleared; the job it lost runs
    there, and the actor asked for in its place (waiting for a GPU: none is free) is called off."""
    fault = tmp_path / "fault"
    fault.write_text("")
    node = _gpu_node(cluster, fault)
    task = load_task(TASK)
    evaluator = RayEvaluator(task, 1, tmp_path / "scratch", kind="gpu", gpu_resource=GPU, slots_per_actor=1,
                             reprobe_s=(0.5, 1.0))
    pipeline = Pipeline(task, evaluator)
    try:
        (first,) = evaluator._members

        async def main() -> object:
            fault.write_text("error")
            failing = asyncio.create_task(pipeline.evaluate(Program(source=CUDA_FAILURE)))
            await evaluator.wait_until(lambda: first.name in evaluator.drained and evaluator.reprobes >= 2)
            assert not failing.done() and not evaluator._members, "still drained while the fault holds"
            assert evaluator._spawning == 1, "another actor was asked for in its place"
            fault.write_text("")
            await evaluator.wait_until(lambda: evaluator.restored == 1)
            result = await failing
            await evaluator.wait_until(lambda: evaluator._spawning == 0)
            return result

        result = asyncio.run(main())
        # the failure stays the candidate's: the GPU it ran on last passed its probe
        assert result.failure == "error" and "illegal memory access" in (result.error or "")  # type: ignore[attr-defined]
        assert [m.name for m in evaluator._members] == [first.name] and not evaluator.drained
        assert not evaluator._starting and evaluator.requeued == 1 and evaluator.infrastructure_failures == 0
        status = _status_of(first.name)
        assert status["health"] == "healthy" and status["drained_reason"] is None
        assert pipeline.evaluate_sync(Program(source=seed())).ok
        assert sorted(a["name"] for a in cluster_status()["actors"]) == [first.name], "the replacement is gone"
    finally:
        pipeline.close()
        cluster.remove_node(node)


_TOY_SERVER = '''
import sys, threading
sys.path.insert(0, {repo!r})
from http.server import ThreadingHTTPServer
from tests.llm_fixtures import ToyCoderServer, _ToyCoderHandler

class Everywhere(ToyCoderServer):
    def __init__(self, port):
        ThreadingHTTPServer.__init__(self, ("0.0.0.0", port), _ToyCoderHandler)
        self.model, self.calls, self._lock = "toy-coder", 0, threading.Lock()

Everywhere(int(sys.argv[1])).serve_forever()
'''


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def test_llm_replicas_on_the_cluster_are_routed_around_when_one_dies(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "toy_server.py"
    script.write_text(_TOY_SERVER.format(repo=str(Path(__file__).resolve().parents[1])))
    endpoints = start_replicas("toy-coder", 2, gpus_per_replica=0, command=[sys.executable, str(script), "{port}"],
                               start_timeout_s=60)
    try:
        assert len({e.url for e in endpoints}) == 2 and all(e.model == "toy-coder" for e in endpoints)
        assert {r["url"] for r in cluster_status()["llm"] if r["healthy"]} == {e.url for e in endpoints}
        client = LLMClient(endpoints, retries=3, backoff_s=0.05, cooldown_s=60)
        messages = [{"role": "user", "content": "write a program"}]

        async def calls(n: int) -> list[str]:
            return [(await client.chat(messages)).endpoint for _ in range(n)]

        asyncio.run(calls(2))
        dead, alive = endpoints
        ray.kill(ray.get_actor("evo-llm-0", namespace="evo"), no_restart=True)
        # The kill is asynchronous and no event tells of a process dying on a node: polled, for 10 s at most.
        deadline = time.monotonic() + 10
        while not _refused(dead.url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _refused(dead.url), "the replica's server outlived its actor (the parent-death signal)"
        answered = asyncio.run(calls(8))
        assert set(answered) == {alive.url}, "every proposal after the death came from the live replica"
        assert [e.url for e in replica_endpoints()] == [alive.url]
    finally:
        assert stop_replicas() >= 1
    assert cluster_status()["llm"] == []


def _replica_info(name: str, timeout_s: float = 120.0) -> dict[str, object]:
    """The replica's `info` once it answers: a call to a restarting actor waits for its restart (the event); one
    sent before the cluster saw its node die fails, and is sent again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(ray.get_actor(name, namespace="evo").info.remote(), timeout=timeout_s)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ValueError):
            if time.monotonic() > deadline:
                raise


def test_an_llm_replica_lost_with_its_node_starts_again_on_a_node_with_a_free_gpu(cluster: Cluster,
                                                                                 tmp_path: Path) -> None:
    script = tmp_path / "toy_server.py"
    script.write_text(_TOY_SERVER.format(repo=str(Path(__file__).resolve().parents[1])))
    nodes = [_gpu_node(cluster) for _ in range(3)]
    endpoints = start_replicas("toy-coder", 2, gpus_per_replica=1, gpu_resource=GPU, start_timeout_s=60,
                               command=[sys.executable, str(script), "{port}"])
    try:
        before = {name: _replica_info(name) for name in ("evo-llm-0", "evo-llm-1")}
        lost = next(n for n in nodes if n.node_id == before["evo-llm-0"]["node_id"])  # type: ignore[attr-defined]
        spare = next(n for n in nodes if n.node_id not in {i["node_id"] for i in before.values()})  # type: ignore[attr-defined]
        cluster.remove_node(lost)
        nodes.remove(lost)
        after = _replica_info("evo-llm-0")
        assert after["node_id"] == spare.node_id and after["restarted"] is True  # type: ignore[attr-defined]
        assert after["healthy"] and after["url"] != before["evo-llm-0"]["url"]
        assert _replica_info("evo-llm-1") == {**before["evo-llm-1"], "log_tail": ""}, "the other one untouched"
        urls = {e.url for e in replica_endpoints()}
        assert urls == {after["url"], before["evo-llm-1"]["url"]} and len(endpoints) == 2, "two replicas, as asked"
        client = LLMClient(replica_endpoints(), retries=1, backoff_s=0.05)
        reply = asyncio.run(client.chat([{"role": "user", "content": "write a program"}]))
        assert reply.endpoint in urls
    finally:
        assert stop_replicas() == 2
        for node in nodes:
            cluster.remove_node(node)


def test_a_young_actors_rate_counts_over_its_life_not_a_whole_minute() -> None:
    from evo.eval.backends.base import EvalResult
    from evo.eval.backends.ray_actor import RATE_WINDOW_S, _Counters

    counters = _Counters(slots=2)
    counters._born -= 30.0  # an actor started 30 s ago
    for _ in range(15):
        counters.start()
        counters.finish(EvalResult(True, score=1.0))
    assert counters.snapshot()["per_minute"] == pytest.approx(30.0, rel=0.05)  # 15 in 30 s, not 15 a minute
    counters._born -= 2 * RATE_WINDOW_S  # an old actor: the last minute only
    assert counters.snapshot()["per_minute"] == pytest.approx(15.0)
