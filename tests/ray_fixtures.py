"""What the Ray tests share (test_ray_backend, test_ray_health, test_ray_rungs): a real local Ray cluster
(`ray.cluster_utils.Cluster`) with this process connected to it, nodes added to it with a custom resource
standing in for a GPU, and the candidates they evaluate. Import it after `pytest.importorskip("ray")`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from evo.eval.backends.ray import RayEvaluator
from evo.task import Task, load_task

REPO = Path(__file__).resolve().parents[1]
TASK = "math/circle_packing_26"
GPU = "fake_gpu"
# Health checks every 0.5 s: a node removed without notice is seen dead in ~2 s instead of ~15 s.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


@contextmanager
def local_cluster(system_config: dict[str, int] | None = None) -> Iterator[Cluster]:
    """A Ray cluster of a head with 2 CPUs (actors of 1 CPU each), no dashboard, with Ray's `system_config`
    if given; this process is connected to it (namespace `evo-tests`) until both are shut down on leaving."""
    head: dict[str, object] = {"num_cpus": 2, "include_dashboard": False}
    if system_config is not None:
        head["_system_config"] = system_config
    c = Cluster(initialize_head=True, head_node_args=head)
    ray.init(address=c.address, namespace="evo-tests", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def add_node(cluster: Cluster, resources: dict[str, float], env: dict[str, str] | None = None) -> object:
    """A node of 1 CPU with `resources` (its workers' environment extended by `env`), once the cluster has it."""
    node = cluster.add_node(num_cpus=1, resources=resources, env_vars=env)
    cluster.wait_for_nodes()
    return node


def gpu_node(cluster: Cluster, env: dict[str, str] | None = None) -> object:
    """A node with one stand-in GPU (the `GPU` resource)."""
    return add_node(cluster, {GPU: 1}, env)


def seed() -> str:
    """The seed of `TASK`."""
    return (load_task(TASK).root / "seed.py").read_text()


def slow_seed(seconds: float) -> str:
    """The seed, taking `seconds` longer: long enough to be caught in flight (the task's timeout is 10 s)."""
    return "import time\n" + seed() + f"\n_build = construct_packing\n" \
        f"def construct_packing():\n    time.sleep({seconds})\n    return _build()\n"


RMSNORM_SOURCE = REPO / "kernels" / "rmsnorm_fwd.py"


def rmsnorm_on_gpu(scratch: Path) -> tuple[Task, RayEvaluator]:
    """`kernels/rmsnorm_fwd` and one Ray actor of the kernel harness on a stand-in GPU, with short timing (the
    zygote worker and its judge; Triton's interpreter without CUDA). A `gpu_node` must be there for it."""
    from evo.eval.bench import BenchConfig

    task = load_task("kernels/rmsnorm_fwd")
    return task, RayEvaluator(task, 1, scratch, gpu_resource=GPU, slots_per_actor=1,
                              actor_options={"config": BenchConfig(iters=2, warmup=1, compile_baseline=False)})
