"""Drained GPU actors of the Ray backend (`ray.py`): kept up, holding their GPUs so that nothing else lands
there, probed again after a back-off that doubles up to a cap, and handed back to the pool once a probe
passes. `RayEvaluator` owns one `DrainedGpus` and tells it how to wake its jobs and take an actor back."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from evo.errors import EvoError
from evo.eval.backends.ray_connect import first_line

log = logging.getLogger("evo.ray")

REPROBE_ENV = "EVO_GPU_REPROBE_S"  # "FIRST,MAX": seconds before a drained GPU's first re-probe, and the cap
REPROBE_S = (60.0, 600.0)  # the back-off doubles from the first to the cap


def reprobe_setting(value: str | None = None) -> tuple[float, float] | None:
    """The re-probe back-off from `FIRST,MAX` (or one number for both; `0`: never), default $EVO_GPU_REPROBE_S."""
    text = (os.environ.get(REPROBE_ENV, "") if value is None else value).strip()
    if not text:
        return REPROBE_S
    try:
        first, *rest = (float(part) for part in text.split(","))
        cap = rest[0] if rest else first
    except ValueError:
        first = cap = -1.0
    if first == 0:
        return None
    if not 0 < first <= cap or len(text.split(",")) > 2:
        raise EvoError(f"{REPROBE_ENV}={text!r}: expected FIRST,MAX seconds with 0 < FIRST <= MAX (e.g. 60,600), "
                       "or 0 to leave drained GPUs drained")
    return first, cap


@dataclass
class Sick:
    """A drained GPU actor, kept up: when its GPU is probed next (`due`, monotonic) and the back-off now."""

    name: str
    handle: Any
    delay: float
    due: float
    task: asyncio.Task[None] | None = None


class DrainedGpus:
    """The drained GPU actors of one pool. `touch`: the pool changed (a probe failed again); `wake`: the pool
    changed, wake the jobs waiting for a slot; `restore(name, handle, info)`: take an actor whose probe passed
    back into the pool."""

    def __init__(self, ray: Any, reprobe_s: tuple[float, float] | None, touch: Callable[[], None],
                 wake: Callable[[], Awaitable[None]], restore: Callable[[str, Any, dict[str, Any]], None]):
        self._ray, self.reprobe_s = ray, reprobe_s
        self._touch, self._wake, self._restore = touch, wake, restore
        self.sick: dict[str, Sick] = {}
        self.reprobes = 0  # probes of drained GPUs that came back (passed or not)
        self.restored = 0  # drained actors back in service after a probe passed

    @property
    def may_return(self) -> bool:
        """Whether a drained actor may yet come back (one is kept and re-probing is on)."""
        return bool(self.sick) and self.reprobe_s is not None

    def keep(self, name: str, handle: Any) -> None:
        """Keep a drained GPU actor up, to be probed again after the back-off (never, without `reprobe_s`)."""
        first = self.reprobe_s[0] if self.reprobe_s else math.inf
        self.sick[name] = Sick(name, handle, first, time.monotonic() + first)
        self.schedule()

    def schedule(self) -> None:
        """A re-probe task for each drained actor that lacks one in this event loop (none outside a loop: the
        pool's `_acquire` and `wait_until` schedule them once a loop runs)."""
        if self.reprobe_s is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for sick in self.sick.values():
            if sick.task is None or sick.task.done() or sick.task.get_loop() is not loop:
                sick.task = loop.create_task(self._reprobe_loop(sick))

    def close(self) -> list[Any]:
        """Cancel the re-probes; the drained actors' handles, for the pool to kill."""
        for sick in self.sick.values():
            if sick.task is not None:
                sick.task.cancel()
        handles = [sick.handle for sick in self.sick.values()]
        self.sick.clear()
        return handles

    async def _reprobe_loop(self, sick: Sick) -> None:
        """Probe a drained GPU again whenever its back-off ends, doubling the back-off (up to its cap) after each
        probe that fails; one that passes returns the actor to the pool."""
        ray = self._ray
        assert self.reprobe_s is not None
        while self.sick.get(sick.name) is sick:
            await asyncio.sleep(max(0.0, sick.due - time.monotonic()))
            try:
                info = await sick.handle.reprobe.remote()
            except ray.exceptions.RayActorError as e:  # lost with its node: nothing left to bring back
                log.warning("drained Ray actor %s was lost: %s", sick.name, first_line(e))
                self.sick.pop(sick.name, None)
                await self._wake()
                return
            except ray.exceptions.RayError as e:
                info = {"drained_reason": f"the re-probe failed: {first_line(e)}"}
            self.reprobes += 1
            if info.get("drained_reason"):
                sick.delay = min(sick.delay * 2, self.reprobe_s[1])
                sick.due = time.monotonic() + sick.delay
                self._touch()
                continue
            del self.sick[sick.name]
            self.restored += 1
            log.warning("drained Ray actor %s on %s passed its GPU probe again: back in service", sick.name,
                        info.get("node_ip"))
            self._restore(sick.name, sick.handle, info)
            await self._wake()
            return
