"""What a search loop (a run's `Engine`, a suite's `Suite`) does to stop cleanly: Ctrl-C and SIGTERM become a
stop request, and the evaluation workers finish the evaluation in hand while queued children wait for resume."""

from __future__ import annotations

import asyncio
import signal
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
