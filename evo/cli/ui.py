"""`evo ui`: watch one or more runs in a browser, live, read-only."""

from __future__ import annotations

from pathlib import Path

import click

from evo.cli.app import cli, console
from evo.errors import EvoError


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--port", default=8765, show_default=True, help="TCP port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; this machine only by default.")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other than loopback (the view has no login: "
              "anyone who reaches the port reads the runs' code).")
def ui(run_dirs: tuple[Path, ...], port: int, host: str, allow_remote: bool) -> None:
    """Serve a live web view of the runs in RUN_DIRS, side by side: progress and throughput, the best value
    over time, the archive heatmap (click a cell for its elite's code, metrics and verdict, and its lineage
    with diffs), failures and audit rejections by reason, operator and model credit, lessons, and the suite
    table of kernel tasks. It reads the stores read-only and never slows a run that is going on."""
    from evo.report.ui.app import create_app, is_loopback

    try:
        import uvicorn
    except ImportError:
        raise EvoError("evo ui needs starlette and uvicorn: pip install 'evo[ui]'") from None
    if not is_loopback(host):
        if not allow_remote:
            raise EvoError(f"--host {host} would serve the runs' code to other machines, without a login; "
                           "add --allow-remote if that is meant (or tunnel: ssh -L 8765:127.0.0.1:8765 HOST)")
        console.print(f"warning: serving on {host}:{port}, reachable from other machines; the view has no login",
                      highlight=False, markup=False)
    app = create_app(list(run_dirs))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host

    async def announce() -> None:  # after startup: the real port when --port 0 was asked
        bound = next((s.getsockname()[1] for srv in server.servers for s in srv.sockets), port)
        console.print(f"evo ui: http://{shown}:{bound}/  ({len(run_dirs)} run(s); Ctrl-C stops)", highlight=False)

    import asyncio

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            await announce()
        await task

    asyncio.run(main())
