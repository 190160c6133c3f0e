"""LLM replicas on the Ray cluster: `vllm serve` on the cluster's nodes, one replica per GPU group, served to
the LLM operators as today's weighted ensemble (`--llm URL#MODEL,URL#MODEL`, evo/llm/client.py).

    evo cluster llm start Qwen/Qwen2.5-Coder-7B-Instruct --replicas 4 --gpus-per-replica 2
    evo run ... --backend ray --llm ray          # follows the replicas while it runs
    evo run ... --backend ray --llm "$(evo cluster llm endpoints)"    # or a fixed list of their URLs
    evo cluster llm stop

Each replica is a detached Ray actor (`evo-llm-N`, namespace `evo`) holding its GPUs (`num_gpus`), spread over
the nodes; it starts the server as its child on a free port of its node, on every interface, waits until
`/health` answers, and reports `http://NODE_IP:PORT`. The server dies with its actor (the kernel's parent-death
signal), so a replica killed or lost with its node is a server gone, not an orphan holding a GPU; a server that
exits on its own takes its actor with it, so that Ray starts both again. The cluster keeps the requested count:
Ray restarts a replica lost with its node or server (`max_restarts`, -1 by default: always) on a node with the
GPUs it asks for, as soon as one has them free (a node that joins, GPUs let go), under the same name, with a
new URL. A replica that `evo cluster llm stop` or `ray.kill` ends stays ended; `start_replicas(add=True)` adds
more beside the running ones.

The named replicas are the registry: `--llm ray` makes the run's client follow them (`replica_roster`, an
`evo.llm.endpoints.Roster`): every 30 s (`EVO_LLM_REFRESH_S`), and 2 s after a request failed, it re-reads the
healthy replicas by name, so a restarted replica's new URL replaces its old one (with its weight, and a log
line), new replicas join and stopped ones leave, without restarting the search. Routing is the client's:
requests spread by weight, a replica that fails is passed over for a cool-down while the others answer, so
proposals keep flowing when one dies; `evo cluster status` shows each replica's health (its `/health`, asked
now) and `evo cluster llm endpoints` lists only the healthy ones.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.ray_connect import NAMESPACE, connect, first_line
from evo.llm.endpoints import Endpoint, Roster

PREFIX = "evo-llm-"
PORT = "{port}"  # where a custom server command takes the port its replica chose
REFRESH_ENV = "EVO_LLM_REFRESH_S"  # how often `--llm ray` re-reads the replicas (seconds)
# Sets the parent-death signal, then becomes the server: a server whose actor died is killed by the kernel.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
                    "os.getppid() == int(sys.argv[1]) or os._exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


class LLMReplica:
    """One model server on this node for the life of this actor. `command`: the server's argv with `{port}`
    where its port goes (tests, other servers); None: `vllm serve MODEL` on every interface with `serve_args`,
    checked here, on the node (vllm installed, the GPUs visible). `weight`: its share of the run's requests."""

    def __init__(self, name: str, model: str, gpus: int, serve_args: Sequence[str], command: Sequence[str] | None,
                 start_timeout_s: float, weight: float = 1.0) -> None:
        import ray

        from evo.llm.serve import ManagedServer, free_port, vllm_command

        port = free_port("0.0.0.0")
        if command:
            argv = [a.replace(PORT, str(port)) for a in command]
        else:
            argv = vllm_command(model, port, max(1, gpus), serve_args, host="0.0.0.0",
                                what=f"the LLM replica {name}")
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        self.name, self.model, self.gpus, self.weight = name, model, gpus, weight
        self.stopping = False
        self.node_ip = ray.util.get_node_ip_address()
        context = ray.get_runtime_context()
        self.node_id, self.restarted = context.get_node_id(), context.was_current_actor_reconstructed
        self.url = f"http://{self.node_ip}:{port}"
        log = Path(tempfile.mkdtemp(prefix="evo-llm-")) / "server.log"
        self.server = ManagedServer(argv, f"http://127.0.0.1:{port}", start_timeout_s=start_timeout_s, log_path=log)
        self.server.start()  # EvoError with the server's log if it dies or never answers: the actor fails
        threading.Thread(target=self._die_with_server, daemon=True).start()

    def _die_with_server(self) -> None:
        assert self.server.proc is not None
        self.server.proc.wait()
        if not self.stopping:
            # A server that exited on its own (a crash, an OOM, killed): the actor exits too, as a failure, so that
            # Ray restarts it (`max_restarts`) with a new server on a free port; a run following the replicas
            # (`--llm ray`) learns the new URL. Left alive, it would hold its GPUs with nothing serving.
            os._exit(1)

    def info(self) -> dict[str, Any]:
        """Where this replica serves, and whether its server answers `/health` now."""
        running = self.server.running
        return {"name": self.name, "url": self.url, "model": self.model, "node_ip": self.node_ip, "gpus": self.gpus,
                "weight": self.weight, "node_id": self.node_id, "restarted": self.restarted,
                "pid": self.server.proc.pid if self.server.proc is not None else None,
                "healthy": running and self.server.healthy(), "running": running,
                "log": str(self.server.log_path), "log_tail": "" if running else self.server.log_tail(500)}

    def stop(self) -> None:
        """Stop the server (its whole process group)."""
        self.stopping = True
        self.server.stop()


def start_replicas(model: str, replicas: int, *, gpus_per_replica: int = 1, serve_args: Sequence[str] = (),
                   command: Sequence[str] | None = None, address: str | None = None, gpu_resource: str = "GPU",
                   start_timeout_s: float = 1800.0, max_restarts: int = -1, weight: float = 1.0,
                   add: bool = False) -> list[Endpoint]:
    """Start `replicas` servers of `model` on the cluster (each on `gpus_per_replica` GPUs; 0: on CPU) and wait
    until they answer; their endpoints. A replica that fails to start stops the others and raises `EvoError`.
    `max_restarts`: how often Ray starts a replica lost with its node again elsewhere (-1: always, 0: never).
    `weight`: each one's share of a run's requests. `add`: beside the replicas that run already (a run that
    follows them, `--llm ray`, takes the new ones up), instead of refusing to start while some run."""
    if replicas < 1 or gpus_per_replica < 0 or max_restarts < -1 or not weight > 0:
        raise EvoError(f"--replicas must be >= 1, --gpus-per-replica >= 0, --max-restarts >= -1 and --weight > 0 "
                       f"(got {replicas}, {gpus_per_replica}, {max_restarts}, {weight})")
    ray = connect(address)
    running = _replica_names(ray)
    if running and not add:
        raise EvoError("LLM replicas already run on this cluster (`evo cluster status` lists them): "
                       "stop them first with `evo cluster llm stop`, or add more beside them with --add")
    # Adding: only the GPUs free now count (the running replicas hold theirs).
    gpus = int((ray.available_resources() if add else ray.cluster_resources()).get(gpu_resource, 0))
    if gpus_per_replica and gpus < replicas * gpus_per_replica:
        raise EvoError(f"{replicas} replicas of {gpus_per_replica} {gpu_resource}(s) need "
                       f"{replicas * gpus_per_replica}; the cluster has {gpus}{' free' if add else ''}: "
                       "ask for fewer replicas")
    first = 1 + max((int(n.removeprefix(PREFIX)) for n in running if n.removeprefix(PREFIX).isdigit()), default=-1)
    resources: dict[str, Any] = {"num_cpus": 0}
    if gpus_per_replica:
        resources.update({"num_gpus": gpus_per_replica} if gpu_resource == "GPU"
                         else {"resources": {gpu_resource: gpus_per_replica}})
    remote = ray.remote(LLMReplica)
    handles = []
    for i in range(first, first + replicas):
        name = f"{PREFIX}{i}"
        # A restart reruns the constructor: a new server, on whichever node has the resources (a constructor
        # that fails, a server that never answers, is not restarted: Ray restarts only actors that were up).
        options = remote.options(name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=max_restarts,
                                 scheduling_strategy="SPREAD", **resources)
        handles.append(options.remote(name, model, gpus_per_replica, list(serve_args), list(command or []),
                                      start_timeout_s, weight))
    try:
        # A replica that waits for GPUs no node has would wait for ever: bounded by the start's own limit.
        infos = ray.get([h.info.remote() for h in handles], timeout=start_timeout_s + 60)
    except ray.exceptions.RayError as e:
        for h in handles:
            _kill(ray, h)
        raise EvoError(f"an LLM replica of {model} did not start: {first_line(e)}") from e
    return [Endpoint(i["url"], model, weight) for i in infos]


def _replica_names(ray: ModuleType) -> list[str]:
    return sorted(e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                  if e.get("namespace") == NAMESPACE and str(e.get("name", "")).startswith(PREFIX))


def replica_status(ray: ModuleType, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every replica as it answers now (`LLMReplica.info`, all asked at once, `timeout_s` in all), or its name
    and why it does not (a restarting replica answers once restarted: it may miss the time)."""
    names, asked, rows = _replica_names(ray), {}, {}
    for name in names:
        try:
            asked[name] = ray.get_actor(name, namespace=NAMESPACE).info.remote()
        except Exception as e:  # noqa: BLE001 - gone since it was listed
            rows[name] = {"name": name, "healthy": False, "error": first_line(e)}
    deadline = time.monotonic() + timeout_s
    for name, ref in asked.items():
        try:
            rows[name] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - an actor lost with its node, restarting, or hung past the timeout
            rows[name] = {"name": name, "healthy": False, "error": first_line(e)}
    return [rows[name] for name in names]


def replica_endpoints(address: str | None = None, healthy_only: bool = True) -> list[Endpoint]:
    """The endpoints of the cluster's replicas (only those that answer `/health` now, by default)."""
    ray = connect(address, ship_code=False)
    return [_endpoint(r) for r in replica_status(ray) if "url" in r and (r["healthy"] or not healthy_only)]


def _endpoint(row: dict[str, Any]) -> Endpoint:
    return Endpoint(row["url"], row.get("model"), float(row.get("weight", 1.0)))


def serving_replicas(address: str | None = None, timeout_s: float = 5.0) -> dict[str, Endpoint]:
    """The healthy replicas' endpoints by replica name: what a run following the replicas re-reads."""
    ray = connect(address, ship_code=False)
    return {r["name"]: _endpoint(r) for r in replica_status(ray, timeout_s) if "url" in r and r["healthy"]}


def replica_roster(address: str | None = None, refresh_s: float | None = None) -> Roster:
    """The cluster's healthy replicas as a `Roster` (`--llm ray[:ADDRESS]`), re-read every `refresh_s` seconds
    (default: $EVO_LLM_REFRESH_S, else 30); EvoError if none answers now."""
    if refresh_s is None:
        raw = os.environ.get(REFRESH_ENV, "30")
        try:
            refresh_s = float(raw)
        except ValueError:
            raise EvoError(f"{REFRESH_ENV}={raw!r} is not a number of seconds (e.g. {REFRESH_ENV}=30)") from None
    where = f"the Ray cluster at {address}" if address else "the Ray cluster"
    first = serving_replicas(address)
    if not first:
        raise EvoError(f"no LLM replica answers on {where}: start some with `evo cluster llm start MODEL` "
                       "(`evo cluster status` shows those that do not answer)")
    return Roster(lambda: serving_replicas(address), what=f"{where}'s LLM replicas", refresh_s=refresh_s,
                  initial=first)


def endpoints_spec(endpoints: Sequence[Endpoint]) -> str:
    """The `--llm` value for endpoints: `URL#MODEL[@WEIGHT],...` (the weight when it is not 1)."""
    return ",".join((f"{e.url}#{e.model}" if e.model else e.url) + (f"@{e.weight:g}" if e.weight != 1 else "")
                    for e in endpoints)


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
