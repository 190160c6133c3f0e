"""`evo ui`: watch one or more runs in a browser, live, read-only."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import click

from evo.cli.app import cli, console
from evo.errors import EvoError
from evo.eval.peaks import PEAKS


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--port", default=8765, show_default=True, help="TCP port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; this machine only by default.")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other than loopback (the view has no login: "
              "anyone who reaches the port reads the runs' code).")
@click.option("--refresh", "refresh_s", default=5.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="Seconds between a page's updates (the failure and credit tables: three times that).")
@click.option("--nice", "niceness", default=19, show_default=True, type=click.IntRange(0, 19),
              help="Lower the server's CPU priority by this much, so that a run on the same machine keeps its "
              "cores (19: the view takes only what the run leaves idle; 0: as any process).")
@click.option("--gpu", default="H100", show_default=True, type=click.Choice(sorted(PEAKS)),
              help="Whose datasheet peaks give kernel tasks' speed of light in the suite table (a run's store "
              "does not record the GPU that timed it; the scorer itself falls back to H100).")
def ui(run_dirs: tuple[Path, ...], port: int, host: str, allow_remote: bool, refresh_s: float, niceness: int,
       gpu: str) -> None:
    """Serve a live web view of the runs in RUN_DIRS, side by side: progress and throughput, the best value
    over time, the archive heatmap (click a cell for its elite's code, metrics and verdict, and its lineage
    with diffs), failures and audit rejections by reason, operator and model credit, lessons, and the suite
    table of kernel tasks with each workload's time against its speed of light. It reads the stores read-only
    and at low CPU priority (--nice), so that a run on the same machine keeps its pace.

    \b
    evo ui runs/rmsnorm                        # http://127.0.0.1:8765/
    evo ui runs/a runs/b --port 0 --refresh 10 # two runs side by side, any free port
    ssh -L 8765:127.0.0.1:8765 gpu-box         # watch a remote run from a laptop
    """
    if niceness:
        os.nice(niceness)  # first: the imports and the store's opening below run at the lower priority too
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
    # Bound here, not by uvicorn: a port in use is one line (uvicorn logs it and exits 3 with a traceback).
    listening = _listen(host, port)
    app = create_app(list(run_dirs), refresh_s=refresh_s, gpu=gpu)
    config = uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host

    async def announce() -> None:  # after startup: the real port when --port 0 was asked
        bound = listening.getsockname()[1]
        console.print(f"evo ui: http://{shown}:{bound}/  ({len(run_dirs)} run(s); Ctrl-C stops)", highlight=False)

    import asyncio

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[listening]))
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            await announce()
        await task

    asyncio.run(main())


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why there is none."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise EvoError(f"cannot serve on {host}: {e.strerror or e}; give a --host this machine has") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise EvoError(f"port {port} on {host} is in use (another evo ui?): give another --port, or --port 0 "
                           "for any free one") from None
        raise EvoError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock
