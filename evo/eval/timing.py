"""Timing on the GPU: a CUDA graph of the call replayed between CUDA events, the L2 flushed and the device idle.

Used in two places: the reference job times PyTorch eager and `torch.compile` with `time_call`, and a
candidate's process times each of its timed calls, one call per request of the judge (`evo/eval/judge.py`),
which bounds those times with its own clock: as one graph of the whole call where it can
(`evo/eval/timed_graph.py`, built on the events and the poll here), else with `timed_replay`.

The call is recorded once into a CUDA graph (`Replay.capture`), on inputs of its real shapes that are not the
timing's, and each timed call copies its input set into the graph's inputs and replays it. What is timed is
then the GPU's work alone: no Python runs in a replay (an answer cached in Python cannot serve it), and work on
another stream must join the graph before its capture ends (an unjoined stream fails the capture), so it
finishes inside the replay. The timing events are recorded inside the graph, around the call (external event
nodes, torch >= 2.8): the start event runs on the GPU right before the call's first kernel, so the host's
launch of the graph, which differs from one process to another by tens of microseconds, is not in the time
(with events outside the graph, a latency-bound kernel of 10 us measured 18 to 37 us across fresh processes on
the H100). A torch that cannot record them falls back to events around the replay. The device is idle when a
call starts, with no head start (a sleep before the start event, which eager timing needs to hide Python's
launch, lets work on another stream run unseen beside it). Work that still escapes shows as a gap between the
end event and a second event recorded after a synchronise, beyond the host's latency measured just then
(`escaped_s`), and in the judge's clock. A call that cannot be captured (a host synchronisation inside it) is timed eagerly,
`timed_sample`, its launch then inside its time.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BenchConfig:
    iters: int = 30  # timed iterations per workload of the baselines (fixed: no adaptive stopping to game)
    warmup: int = 3
    # Distinct input sets of the timed calls, unseen before them: a candidate's median is taken over
    # 2 x input_sets - 1 calls, most of them first sights (`evo.eval.time_bound.timed_calls`).
    input_sets: int = 4
    min_trials: int = 10  # fresh-input correctness calls over all workloads
    compile_baseline: bool = True



def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()



class L2Flusher:
    """Writes a buffer of twice the L2 size before each timed call, so no call starts with a warm cache."""

    def __init__(self, device: str, l2_bytes: int):
        self.buf = torch.empty(2 * l2_bytes // 4, dtype=torch.int32, device=device) if device.startswith("cuda") else None

    def __call__(self) -> None:
        if self.buf is not None:
            self.buf.zero_()


@dataclass
class Timing:
    median_s: float
    spread: float  # (p75 - p25) / median
    samples: list[float]
    escaped_s: float  # median time of work that ran after the timed stream's end event
    last_outputs: list[Any]  # what the timed calls returned, one per input set (rechecked)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "spread": self.spread, "escaped_s": self.escaped_s,
                "n": len(self.samples)}


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def host_latency_s(device: str, flush: L2Flusher, n: int = 20) -> float:
    """Median gap between an end event and a second event recorded after a synchronise, with no work."""
    if not device.startswith("cuda"):
        return 0.0
    gaps = []
    for _ in range(n):
        flush()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.cuda.synchronize()
        b.record()
        torch.cuda.synchronize()
        gaps.append(a.elapsed_time(b) / 1e3)
    return statistics.median(gaps)


@dataclass
class Sample:
    """One timed call: its time, work seen after its end event, and what it returned."""

    time_s: float
    escaped_s: float
    out: Any


def timed_sample(fn: Callable[..., Any], inputs: Sequence[Any], device: str, flush: L2Flusher,
                 latency_s: float = 0.0) -> Sample:
    """Time one call of `fn` on `inputs` (see the module docstring)."""
    if not device.startswith("cuda"):
        flush()
        t0 = time.perf_counter()
        out = fn(*inputs)
        return Sample(time.perf_counter() - t0, 0.0, out)
    timed, hidden, out = _on_idle_device(lambda: fn(*inputs), flush, latency_s)
    return Sample(timed, hidden, out)


def _on_idle_device(call: Callable[[], Any], flush: L2Flusher, latency_s: float,
                    inner: tuple[Any, Any] | None = None) -> tuple[float, float, Any]:
    """`call` between CUDA events on an idle device, the L2 flushed: its time, the work seen after its end
    event, and what it returned. `inner`: the start and end events that `call` records itself (a graph's own),
    which then time it instead of events around it."""
    flush()
    torch.cuda.synchronize()  # the flush done, and whatever ran before on any stream: nothing overlaps the call
    start, end, after = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    start.record()
    out = call()
    end.record()
    spin(end)
    # The time: the graph's own events where it has them. Work that escaped: from the end event recorded after
    # the call (a graph's own end would put the host's return from the launch in that gap: 20-30 us seen as
    # hidden work on the H100).
    first, last = inner if inner is not None else (start, end)
    torch.cuda.synchronize()  # waits for every stream, including any the candidate hid work on
    after.record()
    spin(after)
    # The same gap once more with nothing to wait for, the same steps (a poll, a synchronise): the host's latency
    # at this very moment (a machine busy compiling wakes this thread late, by tens of microseconds at times).
    # Without the synchronise here, honest kernels showed 14-15 us "after the end event" on the H100.
    idle_a, idle_b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    idle_a.record()
    spin(idle_a)
    torch.cuda.synchronize()
    idle_b.record()
    spin(idle_b)
    timed = first.elapsed_time(last) / 1e3
    host_now = idle_a.elapsed_time(idle_b) / 1e3
    hidden = max(0.0, end.elapsed_time(after) / 1e3 - max(host_now, latency_s))
    # A gap of a few microseconds beyond the host's latency is the host waking late, not hidden
    # work: note it only past 5 us and 10% of the time.
    hidden = hidden if hidden > max(5e-6, 0.1 * timed) else 0.0
    return timed, hidden, out


@dataclass
class Replay:
    """One call of a function recorded as a CUDA graph: its static inputs, what it returned, the graph."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    tick: torch.Tensor  # a one-element counter every capture bumps first: a graph is never empty
    events: tuple[Any, Any] | None = None  # start and end recorded inside the graph, around the call

    @classmethod
    def capture(cls, fn: Callable[..., Any], like: Sequence[Any], device: str) -> Replay:
        """Record `fn` on copies of `like` (already warmed up: compilation and autotuning done)."""
        inputs = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in like)
        tick = torch.zeros(1, device=device)
        events = graph_events() if graph_events_work() else None
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            tick.add_(1)
            if events is not None:
                events[0].record()
            out = fn(*inputs)
            if events is not None:
                events[1].record()
        torch.cuda.synchronize()
        outputs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return cls(graph, inputs, outputs, tick, events)

    def load(self, inputs: Sequence[Any]) -> None:
        """Copy an input set into the graph's inputs (the shapes and every non-tensor must match)."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"{len(inputs)} inputs for a graph recorded with {len(self.inputs)}")
        for dst, src in zip(self.inputs, inputs, strict=True):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)
            elif dst != src:
                raise ValueError(f"a non-tensor input differs from the one the graph was recorded with ({src!r})")


def graph_events() -> tuple[Any, Any]:
    """Two timing events that a graph's capture records as nodes of its own (not as a join of streams)."""
    return (torch.cuda.Event(enable_timing=True, external=True),  # type: ignore[call-arg]
            torch.cuda.Event(enable_timing=True, external=True))  # type: ignore[call-arg]


@functools.cache
def graph_events_work() -> bool:
    """Whether this torch and driver time a graph by events recorded inside it (tried once per process)."""
    try:
        start, end = graph_events()
        x = torch.zeros(1024, device="cuda")
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            start.record()
            x.add_(1)
            end.record()
        graph.replay()
        torch.cuda.synchronize()
        return start.elapsed_time(end) >= 0.0 and float(x[0]) == 1.0
    except Exception:  # noqa: BLE001 - an older torch (no `external`) or a driver that refuses: events outside
        torch.cuda.synchronize()
        return False


def spin(event: torch.cuda.Event) -> None:
    # Polled, not waited on: a thread that sleeps in a synchronise wakes tens of microseconds late on a busy
    # host, and later after a long wait than after a short one (the judge's clock would count it as work).
    while not event.query():
        pass


def timed_replay(replay: Replay, inputs: Sequence[Any] | None, flush: L2Flusher, latency_s: float = 0.0,
                 copy: bool = True) -> Sample:
    """Time one replay of `replay` on `inputs` (None: already written into the graph's inputs; see the module
    docstring); the outputs returned are copies, or with `copy=False` the graph's own (the next replay
    overwrites them)."""
    if inputs is not None:
        replay.load(inputs)
    timed, hidden, _ = _on_idle_device(replay.graph.replay, flush, latency_s, replay.events)
    return Sample(timed, hidden, copies(replay.outputs) if copy else replay.outputs)


def copies(outputs: Sequence[Any]) -> tuple[Any, ...]:
    """The tensors among `outputs` copied (a recorded graph's own are overwritten by its next replay)."""
    return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in outputs)


def time_call(fn: Callable[..., Any], input_sets: Sequence[Sequence[Any]], config: BenchConfig, device: str,
              flush: L2Flusher, latency_s: float = 0.0) -> Timing:
    """Time `fn` over rotated input sets: fixed iterations, L2 flushed, one synchronise per iteration; replayed
    from a CUDA graph as a candidate's calls are, eagerly where it cannot be captured."""
    last: list[Any] = [None] * len(input_sets)
    for i in range(config.warmup):
        fn(*input_sets[i % len(input_sets)])
    sync(device)
    replay = None
    if device.startswith("cuda"):
        try:
            replay = Replay.capture(fn, input_sets[0], device)
        except Exception:  # noqa: BLE001 - not capturable (torch.compile's guards, a host sync): timed eagerly
            torch.cuda.synchronize()
    samples, escaped = [], []
    for i in range(max(config.iters, len(input_sets))):  # every input set timed at least once
        k = i % len(input_sets)
        s = timed_replay(replay, input_sets[k], flush, latency_s) if replay is not None else \
            timed_sample(fn, input_sets[k], device, flush, latency_s)
        samples.append(s.time_s)  # hidden work is judged by the stream_join check, not folded into the time
        escaped.append(s.escaped_s)
        last[k] = s.out
    med = statistics.median(samples)
    return Timing(med, spread_of(samples), samples, statistics.median(escaped), last)


def spread_of(samples: Sequence[float]) -> float:
    """(p75 - p25) / median."""
    med = statistics.median(samples)
    return (_quantile(samples, 0.75) - _quantile(samples, 0.25)) / med if med > 0 else 0.0
