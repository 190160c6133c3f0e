"""`evo cluster status`: the Ray cluster as evo sees it, read from Ray and from evo's named actors."""

from __future__ import annotations

import os
from typing import Any

from evo.eval.backends.ray_connect import NAMESPACE, connect, first_line
from evo.eval.backends.ray_llm import PREFIX, replica_status


def cluster_status(address: str | None = None) -> dict[str, Any]:
    """The cluster as `evo cluster status` shows it: nodes, GPUs, evo's evaluation actors (each with its health,
    jobs done and last error), jobs in flight, rates, the drained GPUs' actors and the LLM replicas."""
    ray = connect(address or os.environ.get("RAY_ADDRESS") or "auto", ship_code=False)
    nodes = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        nodes.append({"node_id": node.get("NodeID", "")[:12], "ip": node.get("NodeManagerAddress"),
                      "alive": bool(node.get("Alive")), "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)})
    actors = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = str(entry.get("name", ""))
        if entry.get("namespace") != NAMESPACE or not name.startswith("evo-") or name.startswith(PREFIX):
            continue
        try:
            handle = ray.get_actor(entry["name"], namespace=NAMESPACE)
            actors.append(ray.get(handle.stats.remote(), timeout=10))
        except Exception as e:  # noqa: BLE001 - an actor that is dying or busy past the timeout
            actors.append({"name": entry["name"], "error": first_line(e)})
    live = [a for a in actors if "error" not in a]
    working = [a for a in live if a.get("health") != "drained"]
    return {"nodes": nodes, "actors": actors, "in_flight": sum(a["in_flight"] for a in live),
            "slots": sum(a["slots"] for a in working), "per_minute": sum(a["per_minute"] for a in live),
            "gpus": sum(n["gpus"] for n in nodes if n["alive"]),
            "drained": sorted(a["name"] for a in live if a.get("health") == "drained"), "llm": replica_status(ray)}
