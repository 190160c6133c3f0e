"""The candidate's side of the kernel harness: a runner that makes the calls the judge asks for.

Runs inside a worker's child process after the candidate was imported (see `evo/eval/worker.py`), so
nothing here is believed: it is the judge (`evo/eval/judge.py`, a process that never imports a
candidate) that decides which calls are made, compares their outputs with the expected ones it alone
holds, and bounds the reported times with its own clock. The runner answers one request at a time:

- `check`: one correctness call on a workload's inputs (fresh, stressed or repeated), outputs NaN-poisoned
  before and sent as data after; the GPU held shared with other checking children;
- `timing_begin` / `timing_end`: hold the GPU alone between them;
- `stage`: the timing's masked sets onto the device (`evo/eval/masked.py`), while the GPU is shared;
- `time_setup`, then `go` once per timed call, as packets on the clock socket (`wire.clock_pair`), with the
  key of its input set: the set unmasked, one call timed with CUDA events, and a digest of its output under
  the judge's digest key, committed before the judge's clock for that call stops (`evo/eval/wire.py`);
- `keep` / `fetch`: the outputs of the timed calls the judge picked, sent as data;
- `facts`: what only this process can observe (threads, flags, harness functions, files, stream).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from evo.eval import digest as digests
from evo.eval import masked as masking
from evo.eval import wire
from evo.eval.integrity import (
    Snapshot,
    aliases,
    clone,
    harness_identity,
    native_threads,
    poison_free_memory,
    precision_flags,
    scrub,
)
from evo.eval.kernel_spec import as_tuple
from evo.eval.reference_data import WorkloadData, seeds_per_workload, workloads_for
from evo.eval.timed_graph import GraphedCalls
from evo.eval.timing import BenchConfig, L2Flusher, Replay, copies, sync, timed_replay, timed_sample

__all__ = ["BenchConfig", "GpuPhases", "Runner", "WorkloadData", "seeds_per_workload", "workloads_for"]

STAGED_BYTES = 4 << 30  # timing inputs a checking child may put on the device before it holds the GPU alone
# (at most 1/32 of the device's memory)


class GpuPhases(Protocol):
    """How a candidate's phases hold the GPU (see `GpuLock` in `evo/eval/worker.py`)."""

    def checking(self) -> AbstractContextManager[None]: ...

    def timing(self) -> AbstractContextManager[None]: ...

    def fetching(self) -> AbstractContextManager[None]: ...


class Unshared:
    """No GPU lock at all (the CPU, or a harness used outside the worker)."""

    def checking(self) -> AbstractContextManager[None]:
        return nullcontext()

    def timing(self) -> AbstractContextManager[None]:
        return nullcontext()

    def fetching(self) -> AbstractContextManager[None]:
        return nullcontext()


class Runner:
    """Serves the judge's requests on `sock`, and its timed calls on `clock`, with `run` (the candidate's, or a
    no-op for calibration)."""

    def __init__(self, sock: socket.socket, clock: socket.socket, run: Callable[..., Any], data: WorkloadData,
                 device: str, config: BenchConfig, l2_bytes: int, latency_s: float, phases: GpuPhases | None = None,
                 before: Snapshot | None = None):
        self.sock, self.run, self.data, self.device, self.config = sock, run, data, device, config
        self.clock = clock  # the timed calls' packets (`wire.clock_pair`)
        self.flush = L2Flusher(device, l2_bytes)
        self.outbox = wire.Buffer(pinned=device.startswith("cuda"))
        self.latency_s = latency_s
        self.phases = phases or Unshared()
        self.before = before
        self._timing = ExitStack()
        self._sets: list[masking.MaskedSet] = []
        self._replay: Replay | None = None
        self._graphed: GraphedCalls | None = None
        self._outs: dict[int, tuple[Any, ...]] = {}
        self._kept: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._staged: dict[str, list[masking.MaskedSet]] = {}
        self._key = 0
        self.seconds: dict[str, float] = {}

    def serve(self) -> None:
        """Answer requests until the judge says `bye` or hangs up."""
        try:
            while True:
                header, _ = wire.recv(self.sock)
                op = header.get("op")
                if op == "bye":
                    return
                handler = getattr(self, f"_op_{op}", None)
                started = time.perf_counter()
                if handler is None:
                    wire.send(self.sock, {"ok": False, "error": f"unknown request {op!r}"})
                    continue
                try:
                    handler(header)
                except Exception as e:  # noqa: BLE001 - the candidate's error is its answer
                    # Into the child's log, which `evo eval` shows with the candidate's own line numbers.
                    traceback.print_exc(file=sys.stderr)
                    wire.send(self.sock, {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                self.seconds[str(op)] = self.seconds.get(str(op), 0.0) + time.perf_counter() - started
        except (wire.WireError, OSError):
            return
        finally:
            self._timing.close()

    # -- correctness ------------------------------------------------------------------------------

    def _op_check(self, h: dict[str, Any]) -> None:
        w = self.data.workload(str(h["w"]))
        with self.phases.checking():
            inputs = self.data.stress_inputs_of(w, self.device) if h.get("stress") else \
                self.data.inputs_of(w, int(h["seed"]), self.device)
            before = clone(inputs)
            poison_free_memory(self.device, int(h.get("poison_bytes", 0)))
            with torch.no_grad():
                got = as_tuple(self.run(*inputs))
            sync(self.device)
            mutated = not all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                              for a, b in zip(inputs, before, strict=True))
            aliased = aliases(got, inputs)
            meta, views = wire.pack_tensors(got, self.outbox)
            wire.send(self.sock, {"ok": True, "mutated": mutated, "aliased": aliased, "tensors": meta}, views)
            del views
            scrub(list(got))
            del got, inputs, before

    # -- timing -----------------------------------------------------------------------------------

    def _op_stage(self, h: dict[str, Any]) -> None:
        """Put the timing's masked sets on the device while the GPU is shared (up to STAGED_BYTES)."""
        budget = STAGED_BYTES
        if self.device.startswith("cuda"):  # children waiting to time all hold theirs: keep it small
            budget = min(budget, torch.cuda.get_device_properties(self.device).total_memory // 32)
        with self.phases.checking():
            for w in self.data.workloads:
                sets = self.data.masked.get(w.name, [])
                size = sum(masking.nbytes(m) for m in sets)
                if sets and size <= budget:
                    budget -= size
                    self._staged[w.name] = [masking.on_device(m, self.device) for m in sets]
            sync(self.device)
        wire.send(self.sock, {"ok": True})

    def _op_timing_begin(self, h: dict[str, Any]) -> None:
        self._timing.enter_context(self.phases.timing())
        wire.send(self.sock, {"ok": True})

    def _op_timing_end(self, h: dict[str, Any]) -> None:
        self._timing.close()
        self._timing = ExitStack()
        wire.send(self.sock, {"ok": True})

    def _op_time_setup(self, h: dict[str, Any]) -> None:
        w = self.data.workload(str(h["w"]))
        self._sets = self._staged.pop(w.name, None) or [masking.on_device(m, self.device) for m in self.data.masked[w.name]]
        self._outs = {}
        self._key = int(h["key"])
        # Warmed up, and recorded as a CUDA graph, on a correctness round's inputs: the timing's own sets stay
        # unseen until their timed calls.
        warm = self.data.inputs_of(w, self.data.seeds[w.name][0], self.device)
        warm_out: object = ()
        with torch.no_grad():
            for _ in range(self.config.warmup):
                warm_out = self.run(*warm)
        sync(self.device)
        del warm_out
        self._graphed, self._replay, graph_error = None, None, ""
        if self.device.startswith("cuda"):
            try:  # the whole call as one graph; else the call alone as a graph, the other steps launched one by one
                with torch.no_grad():
                    self._graphed = GraphedCalls(self.run, warm, self._sets, self._key, self.flush, self.device)
            except Exception as e:  # noqa: BLE001 - NotCapturable, or the candidate's call refused a capture
                graph_error = f"one graph: {type(e).__name__}: {str(e)[:200]}"
                torch.cuda.synchronize()
                try:
                    with torch.no_grad():
                        self._replay = Replay.capture(self.run, warm, self.device)
                except Exception as e2:  # noqa: BLE001 - not capturable: timed eagerly, its launch in its time
                    graph_error += f"; the call: {type(e2).__name__}: {str(e2)[:200]}"
                    torch.cuda.synchronize()
        del warm
        graph = self._graphed is not None or self._replay is not None
        events = self._graphed is not None or (self._replay is not None and self._replay.events is not None)
        wire.send(self.sock, {"ok": True, "sets": len(self._sets), "graph": graph, "graph_events": events,
                              "one_graph": self._graphed is not None, "graph_error": graph_error})
        self._serve_timed_calls(int(h.get("calls", 0)))

    def _serve_timed_calls(self, n: int) -> None:
        """The judge's `n` timed calls, one packet each way on the clock socket, the next request polled for."""
        for _ in range(n):
            h = wire.next_packet(self.clock, spin=self.device.startswith("cuda"))
            try:
                self._op_go(h)
            except Exception as e:  # noqa: BLE001 - the candidate's error is its answer
                traceback.print_exc(file=sys.stderr)
                wire.send_packet(self.clock, {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                return

    def _op_go(self, h: dict[str, Any]) -> None:
        i = int(h["i"])
        # Unmasked with the key that came with this call, inside the judge's clock for it: the set did not
        # exist in this process before (evo/eval/masked.py). A recorded graph's inputs are written in place,
        # and its outputs digested where they lie: the judge's clock holds as few passes over memory as can be.
        masked, key = self._sets[i % len(self._sets)], int(h["key"])
        with torch.no_grad():
            if self._graphed is not None:  # unmask, flush, call, digest: one replay (evo/eval/timed_graph.py)
                t, digest, out = self._graphed(i, key)
                escaped = 0.0  # nothing the call does runs outside its graph
            else:
                if self._replay is not None:
                    masking.unmask_into(masked, key, self._replay.inputs)
                    s = timed_replay(self._replay, None, self.flush, self.latency_s, copy=False)
                else:
                    s = timed_sample(self.run, masking.unmask(masked, key, self.device), self.device, self.flush,
                                     self.latency_s)
                out, t, escaped = as_tuple(s.out), s.time_s, s.escaped_s
                digest = digests.digest(out, self._key)
        wire.send_packet(self.clock, {"ok": True, "t": t, "escaped": escaped, "digest": digest})
        # Kept for the judge's recheck, copied after the answer (the digest committed them): the next replay
        # writes a graph's outputs again.
        self._outs[i] = copies(out) if self._graphed is not None or self._replay is not None else out

    def _op_keep(self, h: dict[str, Any]) -> None:
        for i in h.get("keep", []):
            if int(i) in self._outs:
                self._kept[(str(h["w"]), int(i))] = self._outs[int(i)]
        self._outs = {}
        self._sets = []
        self._replay = self._graphed = None  # the graphs' memory back before the next workload's
        wire.send(self.sock, {"ok": True})

    def _op_fetch(self, h: dict[str, Any]) -> None:
        with self.phases.fetching():
            out = self._kept.pop((str(h["w"]), int(h["i"])), ())
            meta, views = wire.pack_tensors(out, self.outbox)
        wire.send(self.sock, {"ok": True, "tensors": meta}, views)

    # -- what only this process sees -----------------------------------------------------------

    def _op_facts(self, h: dict[str, Any]) -> None:
        snap = self.before
        facts: list[tuple[str, bool, str]] = []
        if snap is not None:
            changed = [k for k, v in harness_identity().items() if snap.identity.get(k) != v]
            facts.append(("dynamic:timer_integrity", not changed,
                          f"the candidate replaced functions the harness trusts: {', '.join(changed)}" if changed else ""))
            flags = [k for k, v in precision_flags().items() if snap.flags.get(k) != v]
            facts.append(("dynamic:global_flags", not flags,
                          f"the candidate changed global precision settings: {', '.join(flags)}" if flags else ""))
            grew = threading.active_count() > snap.py_threads or native_threads() > snap.os_threads
            facts.append(("dynamic:thread_count", not grew,
                          f"threads grew from {snap.os_threads} to {native_threads()} (Python: {snap.py_threads} to "
                          f"{threading.active_count()}): work must finish inside run()" if grew else ""))
            stream_ok = snap.stream is None or torch.cuda.current_stream() == snap.stream
            facts.append(("dynamic:stream_join", stream_ok,
                          "" if stream_ok else "the candidate left a different current stream set"))
            workdir = Path(h["workdir"]) if h.get("workdir") else None
            left = sorted({p.name for p in workdir.iterdir()} - snap.files - {"__pycache__"}) if workdir else []
            facts.append(("dynamic:files_left", not left,
                          f"the candidate left files behind: {', '.join(left[:5])}" if left else ""))
        wire.send(self.sock, {"ok": True, "facts": facts, "seconds": self.seconds})
