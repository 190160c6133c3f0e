"""What a search loop (a run's `Engine`, a suite's `Suite`) does to stop cleanly: Ctrl-C and SIGTERM become a
stop request, and the evaluation workers finish the evaluation in hand while queued children wait for resume."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Q = TypeVar("Q")


def run_with_signals(main: Callable[[], Awaitable[T]], on_signal: Callable[[int], None]) -> T:
    """`asyncio.run(main())` with SIGINT and SIGTERM handed to `on_signal` (which may raise KeyboardInterrupt
    on a second signal to abandon the run) for as long as it runs."""

    async def wrapped() -> T:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await main()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(wrapped())


async def drain(workers: list[asyncio.Task[None]], queue: asyncio.Queue[Q | None]) -> None:
    """Stop the workers after the evaluation each holds (bounded by the task's timeout): queued children are
    dropped here and stay `proposed` in the store, to be evaluated on resume; one None per worker ends it."""
    while not queue.empty():
        queue.get_nowait()
    for _ in workers:
        try:
            queue.put_nowait(None)
        except asyncio.QueueFull:
            break
    await asyncio.gather(*workers, return_exceptions=True)


async def supervise(workers: list[asyncio.Task[None]], producer: asyncio.Task[None], queue: asyncio.Queue[Q | None],
                    deadline: float | None, stop: Callable[[str], None], stopping: Callable[[], bool],
                    tick: Callable[[], None]) -> None:
    """Watch a producer and its evaluation workers until the workers end: a task that raised stops the loop and its
    error is raised here; past `deadline` (time.monotonic) the loop is asked to stop ("time limit"); when it is
    stopping, the producer is cancelled and the workers drained; when the producer is done, the workers empty the
    queue and end. `tick` is called about every quarter of a second."""
    finishing = False  # producer done: workers empty the queue, then stop
    while any(not w.done() for w in workers):
        pending = [w for w in workers if not w.done()] + ([] if producer.done() else [producer])
        await asyncio.wait(pending, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in [producer, *workers] if t.done() and not t.cancelled() and t.exception()]
        if failed:
            stop("error")
            producer.cancel()
            await drain(workers, queue)
            raise failed[0].exception()  # type: ignore[misc]
        if deadline is not None and time.monotonic() > deadline:
            stop("time limit")
        tick()
        if stopping():
            producer.cancel()
            await drain(workers, queue)
            return
        if producer.done() and not finishing:
            finishing = True
            for _ in workers:
                await queue.put(None)


async def next_admission(admitted: asyncio.Event, timeout_s: float = 0.2) -> None:
    """Wait until an evaluation is admitted (`admitted` set anew), or `timeout_s` at most: a producer with no
    parent to mutate yet polls this way instead of spinning."""
    admitted.clear()
    try:
        await asyncio.wait_for(admitted.wait(), timeout=timeout_s)
    except TimeoutError:
        pass
