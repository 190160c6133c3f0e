"""What a GPU worker's forked child does: the reference job, or a candidate's runner, both driven by the judge.

The child sets itself up (its own session, limits, log, CUDA; for a candidate the private caches, the
filesystem guard and the network guard, whose statuses go to the judge before the candidate is imported),
then either runs the task's reference (trusted code: expected outputs to files for the judge, baseline
times, then the no-op calls that calibrate the judge's clock) or imports the candidate, warms it up, compiles
it for the real shapes, and serves the judge's requests (`evo/eval/bench.py`'s `Runner`). Nothing it writes
in its answer decides anything: checks and times reach the engine through the judge.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from evo.eval import digest as digests
from evo.eval import fs_guard, net_guard, wire
from evo.eval import masked as masking
from evo.eval.bench import Runner
from evo.eval.gpu_lock import GpuLock
from evo.eval.integrity import Snapshot
from evo.eval.kernel_spec import as_tuple
from evo.eval.peaks import peaks_for
from evo.eval.reference_data import (
    TimingPlan,
    WorkloadData,
    compiled_baseline,
    stage_reference,
    time_baselines,
    timing_sets_of,
)
from evo.eval.timing import BenchConfig, sync
from evo.task import load_module


def _device_facts(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        return {"device_name": name, "l2_bytes": peaks_for(name).l2_bytes}
    return {"device_name": "cpu", "l2_bytes": 0}


# The harness's own Triton kernels (the digest's, the mask's stream), by the names that name their files in
# Triton's cache.
HARNESS_KERNELS = ("digest_level", "_xor_philox")


def _trusted_triton_cache() -> Path:
    """The Triton cache of this worker's trusted jobs (the reference job's; candidates write elsewhere)."""
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def _copy_compiled_helpers(shared: Path, private_cache: Path) -> None:
    """Copy the shared cache's compiled C helpers (Triton's driver utilities and launchers, `.so` files) and the
    harness's own kernels (the digest's and the mask stream's, compiled there by the reference job) into a
    candidate's private cache, so that it neither rebuilds the helpers with gcc (~1 s a child, measured as
    55 -> 49 candidates per GPU-minute) nor compiles the digest (~6 s a child on the H100, under the driver's
    lock). Copies, never links: a write through a hard link would reach the shared file. Only trusted jobs
    write the shared cache; kernels of other candidates are not in it."""
    try:
        entries = list(shared.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and any(f.suffix == ".so" or f.name.split(".")[0] in HARNESS_KERNELS
                                      for f in entry.iterdir()):
                shutil.copytree(entry, private_cache / entry.name, dirs_exist_ok=True)
        except OSError:
            continue  # a helper missing from the copy is compiled again, nothing worse


def _child_setup(job: dict[str, Any], device: str, private: Path, lock: GpuLock) -> dict[str, Any] | None:
    """Session, limits, log, CUDA; for a candidate job also the filesystem and network guards (their statuses
    are returned, for the judge).

    A candidate may write only beneath its workdir and `private` (its TMPDIR, HOME and the Triton, inductor
    and CUDA caches, all moved there before CUDA starts) and to device files; the reference job (trusted)
    keeps full access. The guard comes after CUDA's start, so that whatever the driver writes while it
    starts is not refused (and before Landlock ABI 8 its helper threads stay unguarded: see fs_guard.py).
    """
    os.setsid()
    candidate = job["kind"] == "candidate"
    if candidate:  # a cache shared between candidates would let one plant compiled code for the next
        shared = _trusted_triton_cache()
        fs_guard.use_private_env(private)
        _copy_compiled_helpers(shared, private / "triton-cache")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if job["kind"] == "candidate":  # the reference job (trusted) writes expected outputs of GBs
        fsize = int(job.get("max_file_mb", 256)) * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    workdir = Path(job["workdir"])
    os.chdir(workdir)
    log = os.open(workdir / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.nice(CHILD_NICENESS)  # see _at_normal_priority
    if device.startswith("cuda"):
        with lock.unslotted():  # never beside another child's timing
            torch.cuda.set_device(device)
            gpu_fraction = float(job.get("gpu_memory_fraction", 0.9))
            torch.cuda.set_per_process_memory_fraction(gpu_fraction)
            # Start CUDA's own helper threads now, so that the candidate's thread count is taken after them.
            torch.ones(1, device=device).add_(1)
            # The harness's Triton kernels compiled (or loaded from the session's cache) before any clock runs.
            digests.prepare_digest(device)
            masking.prepare_stream(device)
            torch.cuda.synchronize()
    if not candidate:
        return None
    # Both guards before the candidate is imported, reported to the judge from here (the candidate has not
    # run yet, so the report is the harness's own): writes confined, and no network at all.
    writes = fs_guard.restrict_writes([workdir, private])
    # No Landlock TCP layer: a second Landlock ruleset would refuse the renames Triton's cache makes in the
    # private folder (seen on the H100: EXDEV); seccomp and the empty namespace stop the network without it.
    # No new unix sockets either: one bound to a path (a Ray raylet's, a server's under /tmp) is reachable by
    # anyone its file permissions allow; the socket to the judge was made before, by the zygote.
    network = net_guard.isolate_network(allow_unix=False, landlock_tcp=False)
    return {"fs": writes.to_dict(), "net": network.to_dict()}


def _run_child(job: dict[str, Any], device: str, data: WorkloadData, lock: GpuLock, sock: socket.socket,
               clock: socket.socket, guards: dict[str, Any] | None) -> dict[str, Any]:
    """The child's part: the reference job (trusted) or the candidate's runner, both driven by the judge.

    Nothing the candidate's child writes in its answer is believed: its checks and times reach the engine
    through the judge (`evo/eval/judge.py`), which the worker's answer quotes."""
    config = BenchConfig(**job.get("config", {}))
    reference = data.reference  # imported once in the zygote (trusted code), inherited by the fork
    facts = _device_facts(device)
    if job["kind"] == "reference":
        # The timing's seeds and mask keys, from the judge to this child only (the zygote, which every
        # candidate's child is forked from, never holds them).
        msg, _ = wire.recv(sock)
        plan: TimingPlan = {str(w): [(int(seed), int(key)) for seed, key in sets]
                            for w, sets in (msg.get("timing") or {}).items()}
        # Untimed work shares the GPU, one workload at a time (on the H100, a suite's references, compilation
        # included, held it alone one after another for minutes while other runs' candidates timed out);
        # only the baselines' timing and the clock's calibration hold it alone.
        compiled = compiled_baseline(reference, config)
        compile_errors: dict[str, str | None] = {}
        for w in data.workloads:  # one workload's sets at a time: they can be GBs on the host
            cpu_sets = timing_sets_of(reference, w, plan)  # on the CPU, before the GPU is held
            with lock.checking():
                compile_errors[w.name] = stage_reference(reference, data, w, cpu_sets, Path(job["expected_dir"]),
                                                         device, plan, Path(job["masked_dir"]), compiled)
            del cpu_sets
        with lock.timing(), _at_normal_priority():
            prepared = time_baselines(reference, data, device, config, facts["l2_bytes"], plan, compiled,
                                      compile_errors)
            wire.send(sock, {"ok": True})  # the files are written: the judge reads them, then calibrates
            Runner(sock, clock, _noop_for(reference, data, device), data, device, config, facts["l2_bytes"],
                   prepared["latency_s"]).serve()
        return {**facts, "prepared": prepared}
    candidate = Path(job["candidate"])
    wire.send(sock, {"ok": True, "guards": guards})
    # Import and the small shapes under the checking lock; the real shapes compile outside it, on the host
    # (`_compile_for_real_shapes`), overlapping other children's timing.
    warm_start = time.perf_counter()
    before = Snapshot.take(candidate.parent, device)
    try:
        sys.path.insert(0, str(candidate.parent))
        # Module-level code and the small shapes run on the GPU as checks do, never beside another child's timing
        # (on the H100, warm-ups outside the lock stretched a timing child's calls by milliseconds, and the
        # judge's clock refused it), and whatever they queued on the GPU ends before the lock is let go.
        with lock.checking():
            try:
                module = load_module(candidate, "candidate")
                run = getattr(module, "run", None)
                if not callable(run):
                    raise TypeError("the candidate defines no callable `run(*inputs)`")
                for params in reference.SPEC.small:
                    inputs = reference.make_inputs(dict(params), 0, device)
                    with torch.no_grad():
                        run(*inputs)
            finally:
                sync(device)
        _compile_for_real_shapes(module, data, device, hidden=job.get("timed") is not False)
    except Exception as e:  # noqa: BLE001 - the candidate's failure, told to the judge
        traceback.print_exc(file=sys.stderr)  # into the child's log: `evo eval` shows it at the user's lines
        wire.send(sock, {"ok": False, "error": f"on a small shape: {type(e).__name__}: {str(e)[:500]}"})
        return {**facts, "warm_error": True}
    warm_s = time.perf_counter() - warm_start
    wire.send(sock, {"ok": True})
    phases = _Phases(lock)
    Runner(sock, clock, run, data, device, config, facts["l2_bytes"],
           float(job.get("prepared", {}).get("latency_s", 0.0)), phases, before).serve()
    return {**facts, "seconds": {"warm": warm_s, **phases.seconds}}


def _noop_for(reference: Any, data: WorkloadData, device: str) -> Callable[..., tuple[Any, ...]]:
    """A `run` that returns outputs of the right shapes without computing: the judge's clock calibration."""
    by_shape: dict[tuple[tuple[int, ...], ...], tuple[Any, ...]] = {}
    for w in data.workloads:
        inputs = data.inputs_of(w, data.seeds[w.name][0], device)
        with torch.no_grad():
            by_shape[_shapes(inputs)] = as_tuple(reference.run(*inputs))

    def noop(*inputs: Any) -> tuple[Any, ...]:
        return by_shape[_shapes(inputs)]

    return noop


def _shapes(inputs: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor))


def _compile_for_real_shapes(module: Any, data: WorkloadData, device: str, hidden: bool = True) -> None:
    """Call the candidate once per workload while a CUDA graph is being captured, on uninitialised inputs of
    the real shapes, and throw the graph away: kernels that specialise on sizes (a row's block, say) compile
    now, on the host, without holding the GPU, and nothing runs on the GPU, where it would disturb another
    child's timing. Best effort: what cannot be captured (a host sync, an autotuner) compiles in the checks.
    `hidden`: the hidden workloads' shapes too (an untimed job checks the visible ones only)."""
    if not device.startswith("cuda"):
        return
    for w in data.workloads:
        if w.hidden and not hidden:
            continue
        seed = data.seeds[w.name][0]
        shaped = [torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device=device)
                  if isinstance(x, torch.Tensor) else x for x in data.inputs[(w.name, seed)]]
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream()
        try:
            with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="relaxed"):
                module.run(*shaped)
        except Exception:  # noqa: BLE001, S110 - not capturable: it compiles during its checks instead
            pass
        finally:
            torch.cuda.set_stream(stream)  # a failed capture leaves its own stream current
        del graph, shaped
    torch.cuda.synchronize()


CHILD_NICENESS = 10


@contextmanager
def _at_normal_priority() -> Iterator[None]:
    """While a child holds the GPU alone it runs at normal priority: children that compile or check
    meanwhile run niced, so the timing child's host thread wakes on time."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:  # lowering niceness needs privilege; without it every child stays equal
        pass
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, CHILD_NICENESS)


class _Phases:
    """The lock modes of a candidate's phases, for `bench.evaluate_candidate`, with the seconds waited and held."""

    def __init__(self, lock: GpuLock):
        self.lock = lock
        self.seconds: dict[str, float] = {}

    def _add(self, key: str, value: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + value

    @contextmanager
    def _phase(self, name: str, hold: Callable[[], AbstractContextManager[None]]) -> Iterator[None]:
        asked = time.perf_counter()
        with hold(), _at_normal_priority() if name == "timing" else nullcontext():
            got = time.perf_counter()
            self._add(f"wait_{name}", got - asked)
            try:
                yield
            finally:
                self._add(f"held_{name}", time.perf_counter() - got)

    def checking(self) -> AbstractContextManager[None]:
        return self._phase("checks", self.lock.checking)

    def timing(self) -> AbstractContextManager[None]:
        return self._phase("timing", self.lock.timing)

    def fetching(self) -> AbstractContextManager[None]:
        # A kept output copied to the host: no kernel, no new device memory, so no checking slot (a fetch
        # queued for one behind other children's checks, 0.6-1.7 s a candidate on the H100); never in a timing.
        return self._phase("fetch", self.lock.unslotted)


def child_main(job: dict[str, Any], device: str, data: WorkloadData, lock: GpuLock, result_path: Path,
                sock: socket.socket, clock: socket.socket, close_fds: list[int]) -> None:
    # The zygote's other descriptors are not the child's: the judge's control socket (through which a
    # candidate could send the judge requests of its own) and the engine's job pipes (0 and 1).
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # (the log takes it in _child_setup)
    if null > 1:
        os.close(null)
    # Opened before the guard, which refuses writes to the session folder: the answer goes through this fd
    # (the zygote reads it once we have exited, and takes a cut-short one for no answer).
    try:
        out = os.open(result_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:
        os._exit(70)  # never return into the zygote's loop; the zygote reports the exit code
    guard = None
    try:
        started = time.perf_counter()
        guard = _child_setup(job, device, private_dir(result_path), lock)
        setup_s = time.perf_counter() - started
        answer = {"status": "ok", **_run_child(job, device, data, lock, sock, clock, guard)}
        answer.setdefault("seconds", {})["setup"] = setup_s
    except BaseException as e:  # noqa: BLE001 - everything a child hits becomes its answer
        answer = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:1000]}",
                  "traceback": traceback.format_exc()[-3000:]}
    data_out = json.dumps(answer).encode()
    while data_out:
        data_out = data_out[os.write(out, data_out):]
    for stream in (sys.stdout, sys.stderr):  # os._exit skips the flush, and the log would lose the last prints
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a candidate may have replaced or closed the stream
            pass
    if device.startswith("cuda"):
        try:  # the context's memory given back, and the context ended, never beside a timing
            lock.hold_until_exit()
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001, S110 - exiting either way
            pass
    os._exit(0)



def private_dir(result_path: Path) -> Path:
    """A candidate child's own TMPDIR, HOME and caches (removed by the zygote when the child is gone)."""
    return result_path.with_name(result_path.stem + ".private")


