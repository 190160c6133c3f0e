"""LLM replicas on the Ray cluster: `vllm serve` on the cluster's nodes, one replica per GPU group, served to
the LLM operators as today's weighted ensemble (`--llm URL#MODEL,URL#MODEL`, evo/llm/client.py).

    evo cluster llm start Qwen/Qwen2.5-Coder-7B-Instruct --replicas 4 --gpus-per-replica 2
    evo run ... --backend ray --llm "$(evo cluster llm endpoints)"
    evo cluster llm stop

Each replica is a detached Ray actor (`evo-llm-N`, namespace `evo`) holding its GPUs (`num_gpus`), spread over
the nodes; it starts the server as its child on a free port of its node, on every interface, waits until
`/health` answers, and reports `http://NODE_IP:PORT`. The server dies with its actor (the kernel's parent-death
signal), so a replica killed or lost with its node is a server gone, not an orphan holding a GPU. The cluster
keeps the requested count: Ray restarts a replica lost with its node (`max_restarts`, -1 by default: always) on
another node with the GPUs it asks for, as soon as one has them free (a node that joins, GPUs let go), under the
same name, with a new URL (`evo cluster llm endpoints` lists it; a run started before reads its `--llm` list
once). A replica that `evo cluster llm stop` or `ray.kill` ends stays ended. Routing is
the client's, unchanged: requests spread by weight, a replica that fails is passed over for a cool-down while
the others answer, so proposals keep flowing when one dies; `evo cluster status` shows each replica's health
(its `/health`, asked now) and `evo cluster llm endpoints` lists only the healthy ones.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.ray_connect import NAMESPACE, connect, first_line
from evo.llm.endpoints import Endpoint

PREFIX = "evo-llm-"
PORT = "{port}"  # where a custom server command takes the port its replica chose
# Sets the parent-death signal, then becomes the server: a server whose actor died is killed by the kernel.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
                    "os.getppid() == int(sys.argv[1]) or os._exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


class LLMReplica:
    """One model server on this node for the life of this actor. `command`: the server's argv with `{port}`
    where its port goes (tests, other servers); None: `vllm serve MODEL` on every interface with `serve_args`,
    checked here, on the node (vllm installed, the GPUs visible)."""

    def __init__(self, name: str, model: str, gpus: int, serve_args: Sequence[str], command: Sequence[str] | None,
                 start_timeout_s: float) -> None:
        import ray

        from evo.llm.serve import ManagedServer, free_port, vllm_command

        port = free_port("0.0.0.0")
        if command:
            argv = [a.replace(PORT, str(port)) for a in command]
        else:
            argv = vllm_command(model, port, max(1, gpus), serve_args, host="0.0.0.0",
                                what=f"the LLM replica {name}")
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        self.name, self.model, self.gpus = name, model, gpus
        self.node_ip = ray.util.get_node_ip_address()
        context = ray.get_runtime_context()
        self.node_id, self.restarted = context.get_node_id(), context.was_current_actor_reconstructed
        self.url = f"http://{self.node_ip}:{port}"
        log = Path(tempfile.mkdtemp(prefix="evo-llm-")) / "server.log"
        self.server = ManagedServer(argv, f"http://127.0.0.1:{port}", start_timeout_s=start_timeout_s, log_path=log)
        self.server.start()  # EvoError with the server's log if it dies or never answers: the actor fails

    def info(self) -> dict[str, Any]:
        """Where this replica serves, and whether its server answers `/health` now."""
        running = self.server.running
        return {"name": self.name, "url": self.url, "model": self.model, "node_ip": self.node_ip, "gpus": self.gpus,
                "node_id": self.node_id, "restarted": self.restarted,
                "healthy": running and self.server.healthy(), "running": running,
                "log": str(self.server.log_path), "log_tail": "" if running else self.server.log_tail(500)}

    def stop(self) -> None:
        """Stop the server (its whole process group)."""
        self.server.stop()


def start_replicas(model: str, replicas: int, *, gpus_per_replica: int = 1, serve_args: Sequence[str] = (),
                   command: Sequence[str] | None = None, address: str | None = None, gpu_resource: str = "GPU",
                   start_timeout_s: float = 1800.0, max_restarts: int = -1) -> list[Endpoint]:
    """Start `replicas` servers of `model` on the cluster (each on `gpus_per_replica` GPUs; 0: on CPU) and wait
    until they answer; their endpoints. A replica that fails to start stops the others and raises `EvoError`.
    `max_restarts`: how often Ray starts a replica lost with its node again elsewhere (-1: always, 0: never)."""
    if replicas < 1 or gpus_per_replica < 0 or max_restarts < -1:
        raise EvoError(f"--replicas must be >= 1, --gpus-per-replica >= 0 and --max-restarts >= -1 (got {replicas}, "
                       f"{gpus_per_replica}, {max_restarts})")
    ray = connect(address)
    if _replica_names(ray):
        raise EvoError("LLM replicas already run on this cluster (`evo cluster status` lists them): "
                       "stop them first with `evo cluster llm stop`")
    gpus = int(ray.cluster_resources().get(gpu_resource, 0))
    if gpus_per_replica and gpus < replicas * gpus_per_replica:
        raise EvoError(f"{replicas} replicas of {gpus_per_replica} {gpu_resource}(s) need "
                       f"{replicas * gpus_per_replica}; the cluster has {gpus}: ask for fewer replicas")
    resources: dict[str, Any] = {"num_cpus": 0}
    if gpus_per_replica:
        resources.update({"num_gpus": gpus_per_replica} if gpu_resource == "GPU"
                         else {"resources": {gpu_resource: gpus_per_replica}})
    remote = ray.remote(LLMReplica)
    handles = []
    for i in range(replicas):
        name = f"{PREFIX}{i}"
        # A restart reruns the constructor: a new server, on whichever node has the resources (a constructor
        # that fails, a server that never answers, is not restarted: Ray restarts only actors that were up).
        options = remote.options(name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=max_restarts,
                                 scheduling_strategy="SPREAD", **resources)
        handles.append(options.remote(name, model, gpus_per_replica, list(serve_args), list(command or []),
                                      start_timeout_s))
    try:
        # A replica that waits for GPUs no node has would wait for ever: bounded by the start's own limit.
        infos = ray.get([h.info.remote() for h in handles], timeout=start_timeout_s + 60)
    except ray.exceptions.RayError as e:
        for h in handles:
            _kill(ray, h)
        raise EvoError(f"an LLM replica of {model} did not start: {first_line(e)}") from e
    return [Endpoint(i["url"], model) for i in infos]


def _replica_names(ray: ModuleType) -> list[str]:
    return sorted(e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                  if e.get("namespace") == NAMESPACE and str(e.get("name", "")).startswith(PREFIX))


def replica_status(ray: ModuleType, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every replica as it answers now (`LLMReplica.info`), or its name and why it does not."""
    rows = []
    for name in _replica_names(ray):
        try:
            rows.append(ray.get(ray.get_actor(name, namespace=NAMESPACE).info.remote(), timeout=timeout_s))
        except Exception as e:  # noqa: BLE001 - an actor lost with its node, or hung past the timeout
            rows.append({"name": name, "healthy": False, "error": first_line(e)})
    return rows


def replica_endpoints(address: str | None = None, healthy_only: bool = True) -> list[Endpoint]:
    """The endpoints of the cluster's replicas (only those that answer `/health` now, by default)."""
    ray = connect(address, ship_code=False)
    return [Endpoint(r["url"], r.get("model")) for r in replica_status(ray)
            if "url" in r and (r["healthy"] or not healthy_only)]


def endpoints_spec(endpoints: Sequence[Endpoint]) -> str:
    """The `--llm` value for endpoints: `URL#MODEL,...`."""
    return ",".join(f"{e.url}#{e.model}" if e.model else e.url for e in endpoints)


def stop_replicas(address: str | None = None) -> int:
    """Stop every replica (its server first); how many there were."""
    ray = connect(address, ship_code=False)
    names = _replica_names(ray)
    for name in names:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        try:
            ray.get(handle.stop.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - lost already: killing it is all that is left
            pass
        _kill(ray, handle)
    return len(names)


def _kill(ray: ModuleType, handle: Any) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass
