"""The whole timed call as one CUDA graph: the set's unmasking, the L2 flush, the call between timing events and
the digest of its outputs, one launch and one poll from the host.

Why: the judge bounds a child's reported times with its own clock, from its request to the answer, less the
trusted no-op's overhead (`evo/eval/time_bound.py`); the bound's resolution is the spread of that overhead.
With each step launched from Python (unmask, flush, synchronise, replay, poll, synchronise, the digest's levels,
their read-back) the no-op's gap was 397-442 us on the H100, p10 to p90 60-100 us; as one graph (the prototype
of `benchmarks/timed_call_cost.py`), 95-147 us within 10 us (BENCHMARKS.md, session 7).

One graph per input set, each recorded once per workload: it copies the set's stream seeds from a pinned host
buffer, which the host fills right before the replay with the key that came with the call (so the set's inputs
still exist nowhere before the judge's clock runs: `evo/eval/masked.py`), XORs the set's masked words, staged on
the device, into the call's inputs (`evo/eval/masked_kernel.py`), flushes the L2, records the start event, makes
the call, records the end event, hashes every output (`evo/eval/digest.py`) and copies the states to pinned host
memory. The host then folds them into the digest. Work on another stream must join the capture, so nothing the
call does escapes the graph, whose end the host waits for inside the judge's clock.

Used by `evo/eval/bench.py` where every tensor input is whole 64-bit words in C order and the torch records
timing events inside a graph; anything else raises `NotCapturable`, and the call is timed step by step as before
(`evo/eval/timing.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from evo.eval import digest as digests
from evo.eval import masked as masking
from evo.eval.kernel_spec import as_tuple
from evo.eval.masked_kernel import xor_philox
from evo.eval.timing import L2Flusher, graph_events, graph_events_work, spin

MAX_OUTPUTS = 64  # outputs one graph digests (their states' pinned buffer is made before the capture)


class NotCapturable(Exception):
    """The timed call cannot be one graph here (its inputs' layout, this torch, or the call itself)."""


@dataclass
class _SetGraph:
    graph: Any  # torch.cuda.CUDAGraph
    start: Any  # the timing events, recorded inside the graph around the call
    end: Any
    outputs: tuple[Any, ...]
    states: torch.Tensor  # pinned: two int64 words per hashed output (non-empty tensors, in order), from the graph


class GraphedCalls:
    """One workload's timed calls, each one replay of the graph of its input set (see the module docstring)."""

    def __init__(self, run: Callable[..., Any], like: Sequence[Any], sets: Sequence[masking.MaskedSet],
                 digest_key: int, flush: L2Flusher, device: str):
        if not device.startswith("cuda") or not graph_events_work():
            raise NotCapturable("timing events inside a CUDA graph are not available here")
        self.inputs = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in like)
        self.tensor_at = [j for j, x in enumerate(self.inputs) if isinstance(x, torch.Tensor)]
        for masked in sets:
            for j, (m, dst) in enumerate(zip(masked, self.inputs, strict=True)):
                if isinstance(m, masking.MaskedTensor) != isinstance(dst, torch.Tensor):
                    raise NotCapturable(f"input {j} is a tensor in one set and not in another")
                if isinstance(m, masking.MaskedTensor):
                    if not m.bits.is_cuda or not masking.writable_in_one_pass(m, dst) or m.shape != tuple(dst.shape):
                        raise NotCapturable(f"input {j} ({m.dtype} {m.shape}) is not whole words on the device")
                elif m != dst:
                    raise NotCapturable(f"a non-tensor input differs between sets ({m!r})")
        self.digest_key = digest_key
        self.sets = tuple(sets)  # the graphs read the masked words where they lie: kept alive with them
        self._seeds = torch.zeros(len(self.tensor_at), dtype=torch.int64, pin_memory=True)
        self._seeds_view = self._seeds.numpy()
        self._seeds_dev = torch.zeros(len(self.tensor_at), dtype=torch.int64, device=device)
        self._done = torch.cuda.Event()
        self.graphs = [self._record(run, masked, flush, device) for masked in sets]

    def _record(self, run: Callable[..., Any], masked: masking.MaskedSet, flush: L2Flusher,
                device: str) -> _SetGraph:
        start, end = graph_events()
        states = torch.zeros(MAX_OUTPUTS, 2, dtype=torch.int64, pin_memory=True)  # not allocated while capturing
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            self._seeds_dev.copy_(self._seeds, non_blocking=True)
            for slot, j in enumerate(self.tensor_at):
                m = masked[j]
                assert isinstance(m, masking.MaskedTensor)
                xor_philox(m.bits, self._seeds_dev[slot:slot + 1], masking.whole_words(self.inputs[j]))
            flush()
            start.record()
            outputs = as_tuple(run(*self.inputs))
            end.record()
            positions = [p for p, o in enumerate(outputs) if type(o) is torch.Tensor and o.numel()]
            if len(positions) > MAX_OUTPUTS:
                raise NotCapturable(f"{len(positions)} outputs, more than the {MAX_OUTPUTS} one graph digests")
            for row, p in enumerate(positions):
                states[row].copy_(digests.state_of(outputs[p], self.digest_key, p), non_blocking=True)
        torch.cuda.synchronize()
        return _SetGraph(graph, start, end, outputs, states[:len(positions)])

    def __call__(self, i: int, mask_key: int) -> tuple[float, int, tuple[Any, ...]]:
        """Timed call `i` (input set i % sets) under `mask_key`: its time by the events inside the graph, the
        digest of its outputs under the workload's digest key, and the outputs (the graph's own: the set's next
        replay overwrites them)."""
        g = self.graphs[i % len(self.graphs)]
        self._seeds_view[:] = [masking.stream_seed(mask_key, j) for j in self.tensor_at]
        g.graph.replay()
        self._done.record()
        spin(self._done)
        states = [(a, b) for a, b in g.states.tolist()]
        return g.start.elapsed_time(g.end) / 1e3, digests.fold(states, self.digest_key), g.outputs
