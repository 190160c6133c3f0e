"""The GPU timing harness and the dynamic checks of a kernel candidate.

Runs inside an evaluation worker's child process (see `evo/eval/worker.py`). Two jobs use it:

- the *reference job* (trusted code only): for each workload of a task, the expected outputs of a
  pool of seeds (saved to files, so no memory of this process can hold the answer for the candidate)
  and the baseline times of PyTorch eager and `torch.compile`;
- the *candidate job*: import the candidate, check it on fresh inputs of every workload (hidden ones
  included) against those files, and, where the task declares a `Stress`, once per workload on inputs of
  large magnitude, time it, recheck what the timed calls returned, and report facts
  for the auditor (inputs unchanged, no aliasing, no state between calls, harness untouched, no new
  threads, no files left behind, work kept on the timed stream).

Timing: CUDA events around each call, one synchronise per iteration, a fixed iteration count, an L2
flush (a write of twice the L2 size) before every iteration, input sets with distinct pointers
rotated between iterations, median and spread reported. Work that a candidate hides on another
stream is caught: after the end event the device is synchronised and a second event recorded; time
between the two beyond the measured host latency is added to the kernel's time and reported.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch

from evo.eval.kernel_spec import Workload, as_tuple, compare_outputs, stress_description, stress_inputs


@dataclass(frozen=True)
class BenchConfig:
    iters: int = 30  # timed iterations per workload (fixed: no adaptive stopping to game)
    warmup: int = 3
    input_sets: int = 3  # distinct input sets rotated between iterations
    min_trials: int = 10  # fresh-input correctness calls over all workloads
    compile_baseline: bool = True


STAGED_BYTES = 4 << 30  # timing inputs a checking child may put on the device before it holds the GPU alone
# (at most 1/32 of the device's memory)


def workloads_for(spec: Any, device: str) -> tuple[Workload, ...]:
    """The task's workloads, or on CPU (Triton's interpreter) its small shapes, every other one hidden."""
    if device.startswith("cuda"):
        return tuple(spec.workloads)
    return tuple(Workload(f"small_{i}", dict(p), "CPU shape", hidden=i % 2 == 1) for i, p in enumerate(spec.small))


def seeds_per_workload(n_workloads: int, config: BenchConfig) -> int:
    return max(config.input_sets, math.ceil(config.min_trials / max(n_workloads, 1)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- timing ----------------------------------------------------------------------------------------


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
    late: int = 0  # samples taken again because the GPU had waited for the host

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "spread": self.spread, "escaped_s": self.escaped_s,
                "n": len(self.samples), "late": self.late}


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


HEAD_START_CYCLES = 200_000  # ~100 us of GPU clock
MAX_HEAD_START_CYCLES = 20_000_000  # ~10 ms
LATE_RETRIES = 3


def _head_start(cycles: int = HEAD_START_CYCLES) -> None:
    """Keep the GPU busy before the start event, so that the host has enqueued the call by the time the
    GPU reaches it: the events then time the GPU's work, not Python's launch overhead."""
    torch.cuda._sleep(cycles)


def host_latency_s(device: str, flush: L2Flusher, n: int = 20) -> float:
    """Median gap between an end event and a second event recorded after a synchronise, with no work."""
    if not device.startswith("cuda"):
        return 0.0
    gaps = []
    for _ in range(n):
        flush()
        _head_start()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.cuda.synchronize()
        b.record()
        torch.cuda.synchronize()
        gaps.append(a.elapsed_time(b) / 1e3)
    return statistics.median(gaps)


def time_call(fn: Callable[..., Any], input_sets: Sequence[Sequence[Any]], config: BenchConfig, device: str,
              flush: L2Flusher, latency_s: float = 0.0) -> Timing:
    """Time `fn` over rotated input sets: fixed iterations, L2 flushed, one synchronise per iteration."""
    last: list[Any] = [None] * len(input_sets)
    for i in range(config.warmup):
        fn(*input_sets[i % len(input_sets)])
    _sync(device)
    samples, escaped = [], []
    cuda = device.startswith("cuda")
    head, late = HEAD_START_CYCLES, 0
    for i in range(max(config.iters, len(input_sets))):  # every input set timed (and rechecked) at least once
        k = i % len(input_sets)
        if cuda:
            for attempt in range(LATE_RETRIES + 1):
                flush()
                start, end, after = (torch.cuda.Event(enable_timing=True) for _ in range(3))
                _head_start(head)
                start.record()
                out = fn(*input_sets[k])
                end.record()
                # Had the GPU reached the start event before the call was enqueued, it may have waited for
                # the host (a busy or descheduled host: seen as 10-20x medians in one worker of ten). Then
                # the sample is taken again behind a longer head start; the last attempt counts regardless.
                if not start.query() or attempt == LATE_RETRIES:
                    break
                torch.cuda.synchronize()
                late += 1
                head = min(4 * head, MAX_HEAD_START_CYCLES)
            torch.cuda.synchronize()  # waits for every stream, including any the candidate hid work on
            after.record()
            torch.cuda.synchronize()
            # The same gap once more with nothing to wait for but the same head start: the host's latency at
            # this very moment, after a wait as long as the call's (a machine busy compiling wakes this thread
            # late, by tens of microseconds at times, and later after a long wait than after a short one).
            idle_a, idle_b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            _head_start(head)
            idle_a.record()
            torch.cuda.synchronize()
            idle_b.record()
            torch.cuda.synchronize()
            timed = start.elapsed_time(end) / 1e3
            host_now = idle_a.elapsed_time(idle_b) / 1e3
            hidden = max(0.0, end.elapsed_time(after) / 1e3 - max(host_now, latency_s))
            # A gap of a few microseconds beyond the host's latency is the host waking late, not hidden
            # work: note it only past 5 us and 10% of the time.
            hidden = hidden if hidden > max(5e-6, 0.1 * timed) else 0.0
            samples.append(timed)  # hidden work is judged by the stream_join check, not folded into the time
            escaped.append(hidden)
        else:
            flush()
            t0 = time.perf_counter()
            out = fn(*input_sets[k])
            samples.append(time.perf_counter() - t0)
            escaped.append(0.0)
        last[k] = out
    med = statistics.median(samples)
    spread = (_quantile(samples, 0.75) - _quantile(samples, 0.25)) / med if med > 0 else 0.0
    return Timing(med, spread, samples, statistics.median(escaped), last, late)


# -- the data: inputs and expected outputs -------------------------------------------------------


def workload_seeds(session_seed: int, workload: Workload, n: int) -> list[int]:
    """The seed pool of one workload in one worker session (fresh per session, not per candidate)."""
    base = (session_seed * 1_000_003 + sum(map(ord, workload.name)) * 7919) % (2**31 - 1)
    return [base + 101 * i for i in range(n)]


def _expected_path(out_dir: Path, workload: Workload, seed: int, stressed: bool = False) -> Path:
    return out_dir / workload.name / (f"{seed}-stress.pt" if stressed else f"{seed}.pt")


def _to(x: Any, device: str) -> Any:
    if not isinstance(x, torch.Tensor):
        return x
    return x.to(device) if device != "cpu" else x.clone()  # never hand out the pristine copy


class WorkloadData:
    """A task's inputs and expected outputs for one session, held on the CPU.

    The worker's zygote builds it once per task (generating inputs on the CPU is the slowest step
    of an evaluation: ~0.1-1 s a set at real sizes) and its forked children inherit it. The expected
    outputs come from the reference job, another process, through files (`load_expected`).
    """

    def __init__(self, reference: ModuleType, device: str, session_seed: int, config: BenchConfig):
        self.reference = reference
        self.workloads = workloads_for(reference.SPEC, device)
        n = seeds_per_workload(len(self.workloads), config)
        self.seeds = {w.name: workload_seeds(session_seed, w, n) for w in self.workloads}
        self.inputs = {(w.name, s): tuple(reference.make_inputs(dict(w.params), s, "cpu"))
                       for w in self.workloads for s in self.seeds[w.name]}
        self.expected: dict[tuple[str, int], list[torch.Tensor]] = {}
        # The stress round (`SPEC.stress`): per workload, the first seed's inputs, scaled when handed out
        # (deterministic, so the reference job and the candidate job see the same inputs; nothing more held).
        stress = getattr(reference.SPEC, "stress", None)
        self.stress_seeds = {w.name: self.seeds[w.name][0] for w in self.workloads} if stress is not None else {}
        self.stress_expected: dict[str, list[torch.Tensor]] = {}

    def inputs_of(self, w: Workload, seed: int, device: str) -> tuple[Any, ...]:
        return tuple(_to(x, device) for x in self.inputs[(w.name, seed)])

    def expected_of(self, w: Workload, seed: int, device: str) -> list[torch.Tensor]:
        return [_to(t, device) for t in self.expected[(w.name, seed)]]

    def stress_inputs_of(self, w: Workload, device: str) -> tuple[Any, ...]:
        return stress_inputs(self.reference.SPEC, self.inputs_of(w, self.stress_seeds[w.name], device))

    def stress_expected_of(self, w: Workload, device: str) -> list[torch.Tensor]:
        return [_to(t, device) for t in self.stress_expected[w.name]]

    def load_expected(self, out_dir: Path) -> None:
        """Read the reference job's files into memory, then delete them (they can be GBs)."""
        for w in self.workloads:
            for s in self.seeds[w.name]:
                path = _expected_path(out_dir, w, s)
                self.expected[(w.name, s)] = torch.load(path, weights_only=True)
                path.unlink()
            if w.name in self.stress_seeds:
                path = _expected_path(out_dir, w, self.stress_seeds[w.name], stressed=True)
                self.stress_expected[w.name] = torch.load(path, weights_only=True)
                path.unlink()


# -- the reference job -----------------------------------------------------------------------------


def prepare_reference(reference: ModuleType, data: WorkloadData, out_dir: Path, device: str,
                      config: BenchConfig, l2_bytes: int) -> dict[str, Any]:
    """Expected outputs of every workload's seed pool (to files) and baseline times; trusted code only."""
    flush = L2Flusher(device, l2_bytes)
    latency = host_latency_s(device, flush)
    compiled = None
    if config.compile_baseline:
        try:
            compiled = torch.compile(reference.run)
        except Exception:  # noqa: BLE001 - no compiler here: eager is the baseline
            compiled = None
    baselines: dict[str, Any] = {}
    for w in data.workloads:
        seeds = data.seeds[w.name]
        (out_dir / w.name).mkdir(parents=True, exist_ok=True)
        input_sets = []
        for s in seeds:
            inputs = data.inputs_of(w, s, device)
            with torch.no_grad():
                out = as_tuple(reference.run(*inputs))
            torch.save([o.detach().cpu() for o in out], _expected_path(out_dir, w, s))
            del out
            if len(input_sets) < config.input_sets:
                input_sets.append(inputs)
        if w.name in data.stress_seeds:  # the stress round's expected outputs (see `kernel_spec.Stress`)
            with torch.no_grad():
                out = as_tuple(reference.run(*data.stress_inputs_of(w, device)))
            torch.save([o.detach().cpu() for o in out], _expected_path(out_dir, w, data.stress_seeds[w.name], True))
            del out
        with torch.no_grad():
            eager = time_call(reference.run, input_sets, config, device, flush, latency)
        entry: dict[str, Any] = {"seeds": seeds, "eager": eager.to_dict(), "compile": None}
        if compiled is not None:
            try:
                with torch.no_grad():
                    entry["compile"] = time_call(compiled, input_sets, config, device, flush, latency).to_dict()
            except Exception as e:  # noqa: BLE001 - a compile failure leaves eager as the baseline
                entry["compile_error"] = f"{type(e).__name__}: {e}"[:500]
        times = [entry["eager"]["median_s"]] + ([entry["compile"]["median_s"]] if entry["compile"] else [])
        entry["baseline_s"] = min(times)
        baselines[w.name] = entry
        del input_sets, eager
    return {"workloads": baselines, "latency_s": latency}


# -- the candidate job -----------------------------------------------------------------------------


def _harness_identity() -> dict[str, int]:
    """Identities of the functions the harness trusts; a candidate that patches one is caught."""
    objs = {
        "torch.cuda.Event": torch.cuda.Event,
        "torch.cuda.Event.record": torch.cuda.Event.record,
        "torch.cuda.Event.elapsed_time": torch.cuda.Event.elapsed_time,
        "torch.cuda.synchronize": torch.cuda.synchronize,
        "torch.equal": torch.equal,
        "torch.allclose": torch.allclose,
        "torch.Tensor.to": torch.Tensor.to,
        "torch.Tensor.abs": torch.Tensor.abs,
        "torch.save": torch.save,
        "torch.load": torch.load,
        "time.perf_counter": time.perf_counter,
        "bench.compare_outputs": compare_outputs,
        "bench.time_call": globals()["time_call"],
    }
    return {k: id(v) for k, v in objs.items()}


def _precision_flags() -> dict[str, Any]:
    return {
        "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_reduced_precision": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "fp16_reduced_precision": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
    }


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _storage_span(t: torch.Tensor) -> tuple[int, int]:
    start = t.untyped_storage().data_ptr()
    return start, start + t.untyped_storage().nbytes()


def _aliases(outputs: Sequence[Any], inputs: Sequence[Any]) -> bool:
    spans = [_storage_span(x) for x in inputs if isinstance(x, torch.Tensor) and x.numel()]
    for o in outputs:
        if isinstance(o, torch.Tensor) and o.numel():
            a, b = _storage_span(o)
            if any(a < d and c < b for c, d in spans):
                return True
    return False


def _poison_free_memory(device: str, nbytes: int) -> None:
    """Fill memory the allocator will hand out next with NaN, so an output never written reads as NaN."""
    if nbytes <= 0:
        return
    # Exactly `nbytes`, so that an output of that size is handed this very block; all-ones bytes are NaN
    # in every float format (and -1 in int8).
    junk = torch.empty(nbytes, dtype=torch.uint8, device=device)
    junk.fill_(255)
    del junk


def _scrub(tensors: Sequence[Any]) -> None:
    """Overwrite tensors about to be freed (answers, outputs) with all-ones bytes: a block the allocator
    hands out later never holds a real answer."""
    for t in tensors:
        if not isinstance(t, torch.Tensor) or not t.numel():
            continue
        try:
            if t.is_contiguous():
                t.view(torch.uint8).fill_(255)
            else:
                t.fill_(float("nan") if t.is_floating_point() else -1)
        except (RuntimeError, TypeError):  # an odd output (read-only, exotic dtype): nothing to scrub there
            pass


def _clone(inputs: Sequence[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


@dataclass
class Snapshot:
    """What a candidate must leave as it found it: harness functions, flags, threads, files, stream."""

    files: set[str]
    identity: dict[str, int]
    flags: dict[str, Any]
    py_threads: int
    os_threads: int
    stream: Any

    @classmethod
    def take(cls, workdir: Path, device: str) -> Snapshot:
        return cls({p.name for p in workdir.iterdir()}, _harness_identity(), _precision_flags(),
                   threading.active_count(), _native_threads(),
                   torch.cuda.current_stream() if device.startswith("cuda") else None)


CORRECTNESS_CHECKS = ("dynamic:stale_memory", "dynamic:hidden_shapes", "dynamic:precision", "dynamic:full_coverage",
                      "dynamic:output_type")


def classify_mismatch(reason: str, hidden: bool) -> str:
    """Which dynamic check a wrong output fails, from `compare_outputs`'s reason (first match wins)."""
    if any(k in reason for k in ("shape", "dtype", "tensor subclass", "not a torch.Tensor", "outputs, the", " is on ")):
        return "dynamic:output_type"
    if hidden:
        return "dynamic:hidden_shapes"  # the visible workloads, checked first, all passed
    n, total = _mismatch_counts(reason)
    if total and n / total < 0.05:
        return "dynamic:full_coverage"  # a few elements wrong or unwritten: part of the output skipped
    if "NaN/inf" in reason:
        return "dynamic:stale_memory"  # outputs are poisoned with NaN before each call: unwritten memory shows
    return "dynamic:precision"


def _mismatch_counts(reason: str) -> tuple[int, int]:
    m = re.search(r"(?:differs at|has) (\d+) of (\d+) (?:elements|values)", reason)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class GpuPhases(Protocol):
    """How a candidate's phases hold the GPU (see `GpuLock` in `evo/eval/worker.py`)."""

    def checking(self) -> AbstractContextManager[None]: ...

    def timing(self) -> AbstractContextManager[None]: ...


class _Unshared:
    """No GPU lock at all (a harness used outside the worker, or on the CPU)."""

    def checking(self) -> AbstractContextManager[None]:
        return nullcontext()

    def timing(self) -> AbstractContextManager[None]:
        return nullcontext()


class _Laps:
    """Seconds spent per step of the check rounds, summed over calls (the harness benchmark's breakdown)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.t = time.perf_counter()

    def start(self) -> None:
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self.t
        self.t = now


@dataclass
class CheckLog:
    """Dynamic check results, as (check name, passed, reason) for the auditor's gate."""

    results: list[tuple[str, bool, str]]

    def fail(self, name: str, reason: str) -> None:
        self.results.append((name, False, reason))

    def ok(self, name: str) -> None:
        if not any(n == name for n, _, _ in self.results):
            self.results.append((name, True, ""))

    @property
    def passed(self) -> bool:
        return all(p for _, p, _ in self.results)

    def first_failure(self) -> str | None:
        return next((f"{n}: {r}" for n, p, r in self.results if not p), None)


def evaluate_candidate(reference: ModuleType, candidate_path: Path, data: WorkloadData, prepared: dict[str, Any],
                       device: str, config: BenchConfig, l2_bytes: int,
                       import_module: Callable[[Path], ModuleType], before: Snapshot | None = None,
                       phases: GpuPhases | None = None) -> dict[str, Any]:
    """Check and time one candidate; returns per-workload times and the dynamic check log (see module doc).

    `before` is the state taken before the candidate was first imported (the worker imports it early
    to compile); without it the state is taken now. `phases` holds the GPU for the checks (shared with
    other checking children) and for the timing (alone); without it nothing is held.
    """
    phases = phases or _Unshared()
    spec = reference.SPEC
    workloads = data.workloads
    workdir = candidate_path.parent
    snap = before or Snapshot.take(workdir, device)
    files_before, identity, flags = snap.files, snap.identity, snap.flags
    py_threads, os_threads, stream_before = snap.py_threads, snap.os_threads, snap.stream
    flush = L2Flusher(device, l2_bytes)
    latency = float(prepared.get("latency_s", 0.0))
    log = CheckLog([])
    result: dict[str, Any] = {"workloads": {}, "checks": log.results}

    module = import_module(candidate_path)
    run = getattr(module, "run", None)
    if not callable(run):
        log.fail("interface", "the candidate defines no callable `run(*inputs)`")
        return result
    if _harness_identity() != identity:
        log.fail("dynamic:timer_integrity", "importing the candidate replaced a function the harness trusts "
                 f"({', '.join(k for k, v in _harness_identity().items() if identity[k] != v)})")
        return result

    def expected_of(w: Workload, seed: int) -> list[torch.Tensor]:
        return data.expected_of(w, seed, device)

    # Correctness: visible workloads first, then hidden ones (so that a failure on hidden shapes
    # alone is told apart), fresh inputs per call in a shuffled order; then, where the task declares a
    # `Stress`, one call per workload (visible first) on inputs of large magnitude, which fails
    # dynamic:precision only (every shape has passed on ordinary inputs by then); then a second,
    # shorter round, so that a warm-up detector or state kept between calls shows.
    rng = random.Random(int(prepared.get("session_seed", 0)) ^ hash(candidate_path.name))
    visible = [(w, s, False) for w in workloads if not w.hidden for s in data.seeds[w.name]]
    hidden = [(w, s, False) for w in workloads if w.hidden for s in data.seeds[w.name]]
    order = rng.sample(visible, len(visible)) + rng.sample(hidden, len(hidden))
    stress = [(w, data.stress_seeds[w.name], True) for w in sorted(workloads, key=lambda w: w.hidden)
              if w.name in data.stress_seeds]
    rounds = [("fresh", order), ("stress", stress), ("repeat", rng.sample(order, min(len(order), 4)))]
    try:
        arg_names = tuple(inspect.signature(reference.run).parameters)
    except (TypeError, ValueError):
        arg_names = ()
    phase_start = time.perf_counter()
    laps = _Laps()
    first_out: dict[str, list[list[torch.Tensor]]] = {}
    for kind, calls in rounds:
        for w, s, stressed in calls:
            # The GPU is held (shared) per call, so that a child waiting to time waits one call, not a round.
            with phases.checking():
                laps.start()
                inputs = data.stress_inputs_of(w, device) if stressed else data.inputs_of(w, s, device)
                before = _clone(inputs)
                held = data.stress_expected[w.name] if stressed else data.expected[(w.name, s)]  # on the CPU
                _poison_free_memory(device, sum(e.numel() * e.element_size() for e in held))
                laps.lap("inputs")
                try:
                    with torch.no_grad():
                        got = as_tuple(run(*inputs))
                    _sync(device)
                except Exception as e:  # noqa: BLE001 - the candidate's error is its result
                    log.fail("runs", f"workload {w.name}: run raised {type(e).__name__}: {str(e)[:300]}")
                    return result
                # The answer reaches the device only now: during the call no copy of it was there for a kernel
                # that reads past its inputs' bounds to find.
                laps.lap("call")
                expected = data.stress_expected_of(w, device) if stressed else expected_of(w, s)
                laps.lap("expected")
                reason = compare_outputs(got, tuple(expected), spec.atol, spec.rtol)
                laps.lap("compare")
                if reason is not None:
                    where = f"{'hidden' if w.hidden else 'visible'} workload {w.name} (seed {s})"
                    if kind == "repeat":
                        log.fail("dynamic:warmup_invariance", f"{where}, on a repeated call: {reason}")
                    elif kind == "stress":
                        check = classify_mismatch(reason, False)
                        check = check if check == "dynamic:output_type" else "dynamic:precision"
                        log.fail(check, f"{where}: wrong on {stress_description(spec, before, arg_names)}: {reason}")
                    else:
                        log.fail(classify_mismatch(reason, w.hidden), f"{where}: {reason}")
                    return result
                if not all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                           for a, b in zip(inputs, before, strict=True)):
                    log.fail("dynamic:input_mutation", f"workload {w.name}: run modified its inputs in place")
                    return result
                if _aliases(got, inputs):
                    log.fail("dynamic:no_alias", f"workload {w.name}: an output shares memory with an input")
                    return result
                if kind == "fresh" and len(first_out.setdefault(w.name, [])) < 2:
                    first_out[w.name].append([g.detach().clone() for g in got])
                _scrub([*expected, *got])
                del got, inputs, before, expected
                laps.lap("other")
    with phases.checking():
        laps.start()
        # Different inputs must give different outputs (a constant answer that slips through a loose tolerance).
        for name, outs in first_out.items():
            if len(outs) >= 2 and all(torch.equal(a, b) for a, b in zip(outs[0], outs[1], strict=True)):
                log.fail("dynamic:fresh_inputs", f"workload {name}: two different inputs gave identical outputs")
                return result
        del first_out
        # The timing's input sets go to the device now, while the GPU is shared, so that the time it is
        # held alone goes to timing only (up to STAGED_BYTES; the rest is copied when timed).
        staged: dict[str, list[tuple[Any, ...]]] = {}
        budget = STAGED_BYTES
        if device.startswith("cuda"):  # children waiting to time all hold theirs: keep it small on small GPUs
            budget = min(budget, torch.cuda.get_device_properties(device).total_memory // 32)
        for w in workloads:
            sets = [data.inputs[(w.name, s)] for s in data.seeds[w.name][: config.input_sets]]
            size = sum(x.numel() * x.element_size() for xs in sets for x in xs if isinstance(x, torch.Tensor))
            if size <= budget:
                budget -= size
                staged[w.name] = [data.inputs_of(w, s, device) for s in data.seeds[w.name][: config.input_sets]]
        laps.lap("staging")
    for name in CORRECTNESS_CHECKS + ("dynamic:warmup_invariance", "dynamic:input_mutation", "dynamic:no_alias",
                                      "dynamic:fresh_inputs"):
        log.ok(name)

    result["seconds"] = {"checks": time.perf_counter() - phase_start}
    # Timing (the GPU held alone), then the timed calls' outputs rechecked (shared again).
    timed: list[tuple[Workload, list[int], Timing, bool]] = []
    with phases.timing():
        phase_start = time.perf_counter()
        for w in workloads:
            laps.start()
            seeds = data.seeds[w.name][: config.input_sets]
            input_sets = staged.pop(w.name, None) or [data.inputs_of(w, s, device) for s in seeds]
            laps.lap("timing_inputs")
            try:
                with torch.no_grad():
                    timing = time_call(run, input_sets, config, device, flush, latency)
            except Exception as e:  # noqa: BLE001
                log.fail("runs", f"workload {w.name}: run raised {type(e).__name__} while timed: {str(e)[:300]}")
                return result
            suspicious = max(20e-6, 0.25 * timing.median_s)
            if timing.escaped_s > suspicious:
                # A host that wakes late (other children compiling) looks like hidden work: seen 21-54 us on
                # honest kernels, twice in a row. So measure the host's latency again, now, and re-time with
                # it; hidden work on a side stream still shows then, a slow host no longer does.
                latency_now = max(latency, host_latency_s(device, flush))
                try:
                    with torch.no_grad():
                        again = time_call(run, input_sets, config, device, flush, latency_now)
                except Exception as e:  # noqa: BLE001
                    log.fail("runs", f"workload {w.name}: run raised {type(e).__name__} while re-timed: {str(e)[:300]}")
                    return result
                if again.escaped_s <= suspicious:
                    timing = again
            timed.append((w, seeds, timing, timing.escaped_s > suspicious))
            del input_sets
            laps.lap("timed")
        result["seconds"]["timing"] = time.perf_counter() - phase_start
    with phases.checking():
        laps.start()
        for w, seeds, timing, escaped in timed:
            for s, out in zip(seeds, timing.last_outputs, strict=True):
                reason = compare_outputs(as_tuple(out), tuple(expected_of(w, s)), spec.atol, spec.rtol)
                if reason is not None:
                    log.fail("dynamic:warmup_invariance", f"workload {w.name}: what the timed calls returned is wrong: {reason}")
                    return result
            if escaped:
                log.fail("dynamic:stream_join", f"workload {w.name}: {timing.escaped_s * 1e6:.1f} us of work ran outside "
                         "the timed stream (side stream or deferred work); it was counted in the time")
            result["workloads"][w.name] = timing.to_dict()
            log.ok("dynamic:stream_join")
        del timed
        laps.lap("recheck")
    result["seconds"].update(laps.totals)
    # Facts the candidate must not have changed.
    if _harness_identity() != identity:
        changed = [k for k, v in _harness_identity().items() if identity[k] != v]
        log.fail("dynamic:timer_integrity", f"the candidate replaced functions the harness trusts: {', '.join(changed)}")
    log.ok("dynamic:timer_integrity")
    if _precision_flags() != flags:
        changed = [k for k, v in _precision_flags().items() if flags[k] != v]
        log.fail("dynamic:global_flags", f"the candidate changed global precision settings: {', '.join(changed)}")
    log.ok("dynamic:global_flags")
    if threading.active_count() > py_threads or _native_threads() > os_threads:
        log.fail("dynamic:thread_count", f"threads grew from {os_threads} to {_native_threads()} (Python: {py_threads} to "
                 f"{threading.active_count()}): work must finish inside run()")
    log.ok("dynamic:thread_count")
    if stream_before is not None and torch.cuda.current_stream() != stream_before:
        log.fail("dynamic:stream_join", "the candidate left a different current stream set")
    left = sorted({p.name for p in workdir.iterdir()} - files_before - {"__pycache__"})
    if left:
        log.fail("dynamic:files_left", f"the candidate left files behind: {', '.join(left[:5])}")
    log.ok("dynamic:files_left")
    return result
