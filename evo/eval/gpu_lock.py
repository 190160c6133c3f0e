"""Who may use a GPU when, across every evo process on the machine: file locks the kernel releases if a holder dies.

A worker's children take it shared for their correctness checks and the driver's work (starting CUDA, ending
it), and alone for their timing; the judge takes it shared while it compares outputs on the GPU. See `GpuLock`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _flock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDONLY)  # flock needs no write access (a guarded child has none here)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class GpuLock:
    """Who may use a GPU when, across every evo process on the machine: flocks, released by the kernel if
    a holder dies.

    Timing is exclusive: nothing else runs on the GPU meanwhile. Checking (the correctness rounds, where a
    candidate's kernels meet the real shapes and compile for them) is shared by up to `slots` children at
    once, but never overlaps a timing: the GPU time a candidate holds alone is its timing only (measured
    on the H100: checks were 70-85% of the time a child held the old single lock). A timer waiting blocks
    new checkers (it takes the gate first), so a stream of checkers cannot starve it. `slots` bounds
    the GPU memory that checking children hold at once.
    """

    def __init__(self, path: Path, slots: int = 4):
        self.path = path
        self.gate = path.with_name(path.name + ".gate")
        self.slots = [path.with_name(f"{path.name}.slot{i}") for i in range(max(1, slots))]
        for p in (path, self.gate, *self.slots):  # here: a guarded child may not create them
            os.close(os.open(p, os.O_RDWR | os.O_CREAT, 0o600))

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Hold the GPU alone."""
        with self._through_gate(fcntl.LOCK_EX):
            yield

    @contextmanager
    def checking(self) -> Iterator[None]:
        """Share the GPU with other checkers, never with a timer."""
        slot = self._take_slot()
        try:
            with self._through_gate(fcntl.LOCK_SH):
                yield
        finally:
            _unlock(slot)

    @contextmanager
    def unslotted(self) -> Iterator[None]:
        """Share the GPU with checkers, never with a timer, taking no slot. For the CUDA driver's own work (a
        context made, memory given back at exit), which runs no kernel but maps and clears device memory: on the
        H100 the timings were no steadier for it (BENCHMARKS.md, session 6), but a timing should share the device
        with nothing. And for the judge's comparisons, which the children's checks wait on: with a slot to take,
        the judge queued behind the very checkers it was to answer (1.7-4.0 s of waiting a candidate on the H100,
        BENCHMARKS.md session 8); its memory is not what slots bound (the outputs are on the device before). And
        for a child's fetch of a timed call's kept outputs, a copy to the host, which waited the same way."""
        with self._through_gate(fcntl.LOCK_SH):
            yield

    @contextmanager
    def for_the_judge(self) -> Iterator[None]:
        """Share the GPU with checkers, never with a timer, without passing the gate: the judge's own work
        (comparing a child's outputs, loading expected ones), which children wait on. Through the gate it would
        queue behind a timer that waits for checkers that wait for the judge: no one would go on. Past it, it
        joins the checkers still holding the GPU (flock grants a shared lock beside shared ones, whoever waits
        for the exclusive one), and the timer goes once they and the judge let go."""
        held = _flock(self.path, fcntl.LOCK_SH)
        try:
            yield
        finally:
            _unlock(held)

    def hold_until_exit(self) -> None:
        """Take the GPU as `unslotted` does and keep it until this process exits (the kernel lets it go
        after the process's device files have closed): a child's CUDA context is torn down outside any timing."""
        self._take(fcntl.LOCK_SH)

    def _take(self, mode: int) -> int:
        """Take the GPU in `mode`, passing the gate on the way in: whoever waits at the gate for the GPU
        (a timer, while checkers hold it) keeps everyone who comes later out. Returns the held descriptor."""
        gate = _flock(self.gate, fcntl.LOCK_EX)
        try:
            return _flock(self.path, mode)
        finally:
            _unlock(gate)

    @contextmanager
    def _through_gate(self, mode: int) -> Iterator[None]:
        held = self._take(mode)
        try:
            yield
        finally:
            _unlock(held)

    def _take_slot(self) -> int:
        for path in self.slots:
            try:
                return _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
        return _flock(self.slots[os.getpid() % len(self.slots)], fcntl.LOCK_EX)


