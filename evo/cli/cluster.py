"""`evo cluster status`: the Ray cluster a search runs on, as evo sees it (`evo run --backend ray`)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from evo.cli.app import cli, out


@cli.group()
def cluster() -> None:
    """The Ray cluster behind `evo run --backend ray`."""


@cluster.command()
@click.option("--ray-address", help="The cluster: auto, ray://HOST:10001, ... (default: $RAY_ADDRESS).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(ray_address: str | None, as_json: bool) -> None:
    """Nodes, GPUs, evo's evaluation actors, jobs in flight and evaluations per minute."""
    from evo.eval.backends.ray import cluster_status

    report = cluster_status(ray_address)
    if as_json:
        out.print_json(json.dumps(report))
        return
    nodes = Table("node", "ip", "alive", "CPUs", "GPUs", title="nodes")
    for n in report["nodes"]:
        nodes.add_row(n["node_id"], str(n["ip"]), "yes" if n["alive"] else "DEAD", f"{n['cpus']:g}", f"{n['gpus']:g}")
    out.print(nodes)
    actors = Table("actor", "node", "device", "slots", "in flight", "done", "per min", title="evaluation actors")
    for a in report["actors"]:
        if "error" in a:
            actors.add_row(a["name"], "-", "-", "-", "-", "-", a["error"])
            continue
        device = a.get("device") or (",".join(a["gpu_ids"]) if a.get("gpu_ids") else "cpu")
        actors.add_row(a["name"], str(a["node_ip"]), device, str(a["slots"]), str(a["in_flight"]), str(a["done"]),
                       f"{a['per_minute']:.1f}")
    out.print(actors)
    alive = sum(1 for n in report["nodes"] if n["alive"])
    out.print(f"{alive} node(s) alive, {report['gpus']:g} GPU(s); {len(report['actors'])} actor(s), "
              f"{report['in_flight']} of {report['slots']} slots busy, {report['per_minute']:.1f} evaluations/min",
              highlight=False)
