"""`evo cluster`: the Ray cluster a search runs on, as evo sees it (`evo run --backend ray`), and the LLM
replicas served on it."""

from __future__ import annotations

import json

import click
from rich.table import Table

from evo.cli.app import cli, out

_ADDRESS_HELP = "The cluster: auto, ray://HOST:10001, ... (default: $RAY_ADDRESS)."


@cli.group()
def cluster() -> None:
    """The Ray cluster behind `evo run --backend ray`."""


@cluster.command()
@click.option("--ray-address", help=_ADDRESS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(ray_address: str | None, as_json: bool) -> None:
    """Nodes, GPUs, evo's evaluation actors with the health of each GPU (healthy, or drained and why), jobs in
    flight and done, the last error, evaluations per minute, and the LLM replicas."""
    from evo.eval.backends.ray_status import cluster_status

    report = cluster_status(ray_address)
    if as_json:
        out.print_json(json.dumps(report))
        return
    nodes = Table("node", "ip", "alive", "CPUs", "GPUs", title="nodes")
    for n in report["nodes"]:
        nodes.add_row(n["node_id"], str(n["ip"]), "yes" if n["alive"] else "DEAD", f"{n['cpus']:g}", f"{n['gpus']:g}")
    out.print(nodes)
    actors = Table("actor", "node", "device", "health", "slots", "in flight", "done", "per min", "last error",
                   title="evaluation actors")
    for a in report["actors"]:
        if "error" in a:
            actors.add_row(a["name"], "-", "-", "unreachable", "-", "-", "-", "-", a["error"])
            continue
        device = a.get("device") or (",".join(a["gpu_ids"]) if a.get("gpu_ids") else "cpu")
        health = a.get("health", "-")
        last = a.get("drained_reason") if health == "drained" else a.get("last_error")
        actors.add_row(a["name"], str(a["node_ip"]), device, "DRAINED" if health == "drained" else health,
                       str(a["slots"]), str(a["in_flight"]), str(a["done"]), f"{a['per_minute']:.1f}",
                       (last or "")[:120])
    out.print(actors)
    if report["llm"]:
        replicas = Table("replica", "url", "model", "GPUs", "health", title="LLM replicas")
        for r in report["llm"]:
            replicas.add_row(r["name"], r.get("url", "-"), str(r.get("model", "-")), str(r.get("gpus", "-")),
                             ("healthy" + (" (restarted)" if r.get("restarted") else "")) if r.get("healthy")
                             else f"DOWN {r.get('error', '')}".strip())
        out.print(replicas)
    alive = sum(1 for n in report["nodes"] if n["alive"])
    drained = f", {len(report['drained'])} drained" if report["drained"] else ""
    out.print(f"{alive} node(s) alive, {report['gpus']:g} GPU(s); {len(report['actors'])} actor(s){drained}, "
              f"{report['in_flight']} of {report['slots']} slots busy, {report['per_minute']:.1f} evaluations/min",
              highlight=False)


@cluster.group()
def llm() -> None:
    """Model servers on the cluster's nodes for the LLM operators: start, list, stop.

    \b
      evo cluster llm start Qwen/Qwen2.5-Coder-7B-Instruct --replicas 4 --gpus-per-replica 2
      evo run TASK ... --backend ray --llm ray
      evo cluster llm stop

    The replicas form the run's weighted ensemble: a replica that dies is routed around, the others answer.
    A replica lost with its node (or its server) starts again on a node with free GPUs, as soon as one has
    them, at a new URL, so the cluster keeps the count asked for; a run with `--llm ray` follows them (new
    URLs, replicas added with --add, stopped ones). `--llm "$(evo cluster llm endpoints)"` fixes the list.
    """


@llm.command("start")
@click.argument("model")
@click.option("--replicas", type=int, default=1, show_default=True, help="How many servers, spread over the nodes.")
@click.option("--gpus-per-replica", type=int, default=1, show_default=True,
              help="GPUs of one server (its tensor parallelism); 0 runs it without a GPU.")
@click.option("--serve-arg", "serve_args", multiple=True, help="One more `vllm serve` argument (repeatable), e.g. "
              "--serve-arg=--max-model-len=16384.")
@click.option("--command", help="Another OpenAI-compatible server command instead of `vllm serve` (one string, "
              "split on spaces), with {port} where its port goes.")
@click.option("--timeout", "timeout_s", type=float, default=1800.0, show_default=True,
              help="Seconds a replica may take to answer /health.")
@click.option("--max-restarts", type=int, default=-1, show_default=True,
              help="How often a replica lost with its node is started again on another node (-1: always; 0: never).")
@click.option("--weight", type=float, default=1.0, show_default=True,
              help="Each replica's share of a run's requests, against the other replicas.")
@click.option("--add", is_flag=True, help="Start them beside the replicas that run already (another model too).")
@click.option("--ray-address", help=_ADDRESS_HELP)
def llm_start(model: str, replicas: int, gpus_per_replica: int, serve_args: tuple[str, ...], command: str | None,
              timeout_s: float, max_restarts: int, weight: float, add: bool, ray_address: str | None) -> None:
    """Start REPLICAS servers of MODEL on the cluster and print the --llm value that names them."""
    from evo.eval.backends.ray_llm import endpoints_spec, start_replicas

    if command is not None and "{port}" not in command:
        raise click.BadParameter("the command must hold {port} where the server's port goes", param_hint="--command")
    endpoints = start_replicas(model, replicas, gpus_per_replica=gpus_per_replica, serve_args=serve_args,
                               command=command.split() if command else None, address=ray_address,
                               start_timeout_s=timeout_s, max_restarts=max_restarts, weight=weight, add=add)
    click.echo(endpoints_spec(endpoints))


@llm.command("endpoints")
@click.option("--all", "everyone", is_flag=True, help="List the replicas that do not answer too.")
@click.option("--ray-address", help=_ADDRESS_HELP)
def llm_endpoints(everyone: bool, ray_address: str | None) -> None:
    """Print the --llm value of the cluster's healthy replicas (for `evo run --llm`)."""
    from evo.errors import EvoError
    from evo.eval.backends.ray_llm import endpoints_spec, replica_endpoints

    endpoints = replica_endpoints(ray_address, healthy_only=not everyone)
    if not endpoints:
        raise EvoError("no LLM replica answers on this cluster: start some with `evo cluster llm start MODEL`")
    click.echo(endpoints_spec(endpoints))


@llm.command("stop")
@click.option("--ray-address", help=_ADDRESS_HELP)
def llm_stop(ray_address: str | None) -> None:
    """Stop every LLM replica of the cluster."""
    from evo.eval.backends.ray_llm import stop_replicas

    out.print(f"stopped {stop_replicas(ray_address)} LLM replica(s)", highlight=False)
