"""`evo ui`: the live web view of one or more runs, a Starlette app served by uvicorn.

Read-only by construction: every store is opened with SQLite's `mode=ro` (through `evo.load`), and
every route answers GET only; there is no endpoint that writes. The page (static/index.html, plain
JavaScript, no build step) polls the JSON endpoints below every `refresh_s` seconds (the details a third
as often), saying which version it holds (`?since=N`): an unchanged answer is a few bytes, not redrawn.

Cheap beside a run on the same machine: the server reads on one worker thread (`evo ui` also lowers its
CPU priority, see evo/cli/ui.py), each answer is cached against the store's newest event, and every
read transaction lasts one answer's queries, so the writer's WAL checkpoints are never held back for long.

    GET /                                   the page
    GET /api/runs                           each run's shape: task, metric, budget, archive layout
    GET /api/runs/{i}/overview              progress, throughput, best over time, the archive's cells
    GET /api/runs/{i}/details               failures, audit rejections, credit, lessons, kernel suite row
    GET /api/runs/{i}/program/{id}          one program: code, metrics, verdict
    GET /api/runs/{i}/lineage/{id}          its chain of main parents, with the diff on each edge
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from evo.report.ui.data import LiveRun

STATIC = Path(__file__).parent / "static"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _run(request: Request) -> LiveRun:
    runs: list[LiveRun] = request.app.state.runs
    try:
        i = int(request.path_params["i"])
    except ValueError:
        raise HTTPException(404, "runs are numbered from 0") from None
    if not 0 <= i < len(runs):
        raise HTTPException(404, f"no run {i}: this view serves runs 0..{len(runs) - 1}")
    return runs[i]


def _json(data: object) -> Response:
    # The page polls: never let a proxy or the browser answer from an old copy.
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def favicon(request: Request) -> Response:
    return Response(status_code=204)  # no icon: answered, so that browsers stop asking


async def runs(request: Request) -> Response:
    live: list[LiveRun] = request.app.state.runs
    return _json([r.info() | {"index": i, "refresh_s": request.app.state.refresh_s} for i, r in enumerate(live)])


def _since(request: Request) -> int | None:
    """The version the page already holds (`?since=N`), if it said."""
    raw = request.query_params.get("since", "")
    return int(raw) if raw.isdigit() else None


# SQLite reads block: they run in the thread pool, so that one slow read never holds up the others.
async def overview(request: Request) -> Response:
    return _json(await run_in_threadpool(_run(request).overview, _since(request)))


async def details(request: Request) -> Response:
    return _json(await run_in_threadpool(_run(request).details, _since(request)))


async def program(request: Request) -> Response:
    found = await run_in_threadpool(_run(request).program, request.path_params["pid"])
    if found is None:
        raise HTTPException(404, f"no program {request.path_params['pid']!r} in this run")
    return _json(found)


async def lineage(request: Request) -> Response:
    found = await run_in_threadpool(_run(request).lineage, request.path_params["pid"])
    if found is None:
        raise HTTPException(404, f"no program {request.path_params['pid']!r} in this run")
    return _json(found)


def create_app(run_dirs: Sequence[str | Path], *, window: int = 10_000, min_interval_s: float = 1.0,
               refresh_s: float = 5.0, gpu: str = "H100") -> Starlette:
    """The app serving the runs in `run_dirs` (each opened read-only now: a bad folder fails here); pages
    refresh every `refresh_s` seconds; kernel tasks' speed of light is taken on `gpu`'s datasheet peaks."""
    live = [LiveRun(d, window=window, min_interval_s=min_interval_s, gpu=gpu) for d in run_dirs]
    names = [r.name for r in live]
    for r in live:  # runs in folders of the same name are told apart by their parent folder
        if names.count(r.name) > 1:
            r.name = f"{r.run.run_dir.resolve().parent.name}/{r.name}"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One reader thread: each run's reads are serialised by its lock anyway, and more threads would only
        # take more of the CPU that a run on this machine needs.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        yield
        await asyncio.gather(*(run_in_threadpool(r.close) for r in live))

    app = Starlette(routes=[
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/api/runs", runs),
        Route("/api/runs/{i}/overview", overview),
        Route("/api/runs/{i}/details", details),
        Route("/api/runs/{i}/program/{pid}", program),
        Route("/api/runs/{i}/lineage/{pid}", lineage),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan)
    app.state.runs = live
    app.state.refresh_s = refresh_s
    return app


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the view on this machine."""
    return host in LOOPBACK or host.startswith("127.")


def serve(run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8765, *, log_level: str = "warning"
          ) -> None:
    """Serve the view with uvicorn until Ctrl-C (the caller checks `host`: see `evo ui --allow-remote`)."""
    import uvicorn

    uvicorn.run(create_app(run_dirs), host=host, port=port, log_level=log_level)
