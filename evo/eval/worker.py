"""One evaluation worker per GPU: a zygote that imports torch and Triton once and forks a child per job.

Run as `python -m evo.eval.worker --device cuda:0 --session DIR`. Jobs arrive as JSON lines on stdin,
answers leave as JSON lines on stdout (see `KernelEvaluator` in `evo/eval/backends/kernel.py`).

Why a zygote: a fresh Python process per candidate spends ~5 s importing torch and Triton before any
GPU work (calibrated on an H100). The zygote pays that once, never touches CUDA itself (a forked CUDA
context is unusable), and forks a child per job; the child starts CUDA, imports the candidate,
warms its kernels up on tiny shapes and compiles them for the real ones (under a graph capture, so
nothing runs), in parallel with other children. Then it holds the GPU (`GpuLock`) shared with other
checking children for its correctness checks, and alone for its timing, one timer per GPU. Each child
is its own session (process group) with file-size and core limits and a resident-memory watch; a
crash, hang or memory blow-up kills that child only.

Trust: the reference job runs trusted code only and writes expected outputs to files; the candidate
job runs the candidate next to the harness, which is why the auditor's static screen runs first and
the harness checks its own functions for tampering (see `evo/eval/bench.py`). A candidate child is also
Landlocked (`evo/eval/fs_guard.py`) before the candidate is imported: it may write only beneath its
workdir and a private folder of the session (its TMPDIR, HOME, Triton/inductor/CUDA caches), so it cannot
drop a `.pth` into site-packages, poison a cache the next child or the reference job would load, or
leave state for a later evaluation; the report carries the guard's status as `dynamic:fs_guard`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

# The imports a child would otherwise pay for, done once before any fork.
import torch
import triton  # noqa: F401

from evo.eval import fs_guard, net_guard, wire
from evo.eval.bench import Runner
from evo.eval.integrity import Snapshot
from evo.eval.kernel_spec import as_tuple
from evo.eval.peaks import peaks_for
from evo.eval.reference_data import WorkloadData, prepare_reference
from evo.eval.timing import BenchConfig, sync
from evo.task import load_module

MEMORY_POLL_S = 0.5


def _private_bytes(pid: int) -> int:
    """Memory of a process's session that is its own: private pages (the zygote's inputs, shared
    copy-on-write with every child, do not count against a child until it writes them)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != pid:
                continue
            with open(f"/proc/{entry}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:", "Swap:")):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


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
    def _through_gate(self, mode: int) -> Iterator[None]:
        """Take the GPU in `mode`, passing the gate on the way in: whoever waits at the gate for the GPU
        (a timer, while checkers hold it) keeps everyone who comes later out."""
        gate = _flock(self.gate, fcntl.LOCK_EX)
        try:
            held = _flock(self.path, mode)
        finally:
            _unlock(gate)
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


def _device_facts(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        return {"device_name": name, "l2_bytes": peaks_for(name).l2_bytes}
    return {"device_name": "cpu", "l2_bytes": 0}


def _trusted_triton_cache() -> Path:
    """The Triton cache of this worker's trusted jobs (the reference job's; candidates write elsewhere)."""
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def _copy_compiled_helpers(shared: Path, private_cache: Path) -> None:
    """Copy the shared cache's compiled C helpers (Triton's driver utilities and launchers, `.so` files) into
    a candidate's private cache, so that it does not rebuild them with gcc (~1 s a child, measured as 55 -> 49
    candidates per GPU-minute). Copies, never links: a write through a hard link would reach the shared file.
    Only trusted jobs write the shared cache; kernels of other candidates are not in it."""
    try:
        entries = list(shared.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and any(f.suffix == ".so" for f in entry.iterdir()):
                shutil.copytree(entry, private_cache / entry.name, dirs_exist_ok=True)
        except OSError:
            continue  # a helper missing from the copy is compiled again, nothing worse


def _child_setup(job: dict[str, Any], device: str, private: Path) -> dict[str, Any] | None:
    """Session, limits, log, CUDA; for a candidate job also the filesystem guard (its status is returned).

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
        torch.cuda.set_device(device)
        gpu_fraction = float(job.get("gpu_memory_fraction", 0.9))
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)
        # Start CUDA's own helper threads now, so that the candidate's thread count is taken after them.
        torch.ones(1, device=device).add_(1)
        torch.cuda.synchronize()
    if not candidate:
        return None
    # Both guards before the candidate is imported, reported to the judge from here (the candidate has not
    # run yet, so the report is the harness's own): writes confined, and no network at all.
    writes = fs_guard.restrict_writes([workdir, private])
    network = net_guard.isolate_network()
    return {"fs": writes.to_dict(), "net": network.to_dict()}


def _run_child(job: dict[str, Any], device: str, data: WorkloadData, lock: GpuLock, sock: socket.socket,
               guards: dict[str, Any] | None) -> dict[str, Any]:
    """The child's part: the reference job (trusted) or the candidate's runner, both driven by the judge.

    Nothing the candidate's child writes in its answer is believed: its checks and times reach the engine
    through the judge (`evo/eval/judge.py`), which the worker's answer quotes."""
    config = BenchConfig(**job.get("config", {}))
    reference = data.reference  # imported once in the zygote (trusted code), inherited by the fork
    facts = _device_facts(device)
    if job["kind"] == "reference":
        with lock.timing(), _at_normal_priority():
            prepared = prepare_reference(reference, data, Path(job["expected_dir"]), device, config,
                                         facts["l2_bytes"])
            wire.send(sock, {"ok": True})  # the files are written: the judge reads them, then calibrates
            Runner(sock, _noop_for(reference, data, device), data, device, config, facts["l2_bytes"],
                   prepared["latency_s"]).serve()
        return {**facts, "prepared": prepared}
    candidate = Path(job["candidate"])
    wire.send(sock, {"ok": True, "guards": guards})
    # Import and warm up on the CPU shapes before the lock: compilation overlaps other children's timing.
    warm_start = time.perf_counter()
    before = Snapshot.take(candidate.parent, device)
    try:
        sys.path.insert(0, str(candidate.parent))
        module = load_module(candidate, "candidate")
        run = getattr(module, "run", None)
        if not callable(run):
            raise TypeError("the candidate defines no callable `run(*inputs)`")
        for params in reference.SPEC.small:
            inputs = reference.make_inputs(dict(params), 0, device)
            with torch.no_grad():
                run(*inputs)
        sync(device)
        _compile_for_real_shapes(module, data, device)
    except Exception as e:  # noqa: BLE001 - the candidate's failure, told to the judge
        wire.send(sock, {"ok": False, "error": f"on a small shape: {type(e).__name__}: {str(e)[:500]}"})
        return {**facts, "warm_error": True}
    warm_s = time.perf_counter() - warm_start
    wire.send(sock, {"ok": True})
    phases = _Phases(lock)
    Runner(sock, run, data, device, config, facts["l2_bytes"], float(job.get("prepared", {}).get("latency_s", 0.0)),
           phases, before).serve()
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


def _compile_for_real_shapes(module: Any, data: WorkloadData, device: str) -> None:
    """Call the candidate once per workload while a CUDA graph is being captured, on uninitialised inputs of
    the real shapes, and throw the graph away: kernels that specialise on sizes (a row's block, say) compile
    now, on the host, without holding the GPU, and nothing runs on the GPU, where it would disturb another
    child's timing. Best effort: what cannot be captured (a host sync, an autotuner) compiles in the checks."""
    if not device.startswith("cuda"):
        return
    for w in data.workloads:
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


def _child_main(job: dict[str, Any], device: str, data: WorkloadData, lock: GpuLock, result_path: Path,
                sock: socket.socket, close_fds: list[int]) -> None:
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
        guard = _child_setup(job, device, _private_dir(result_path))
        setup_s = time.perf_counter() - started
        answer = {"status": "ok", **_run_child(job, device, data, lock, sock, guard)}
        answer.setdefault("seconds", {})["setup"] = setup_s
    except BaseException as e:  # noqa: BLE001 - everything a child hits becomes its answer
        answer = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:1000]}",
                  "traceback": traceback.format_exc()[-3000:]}
    data_out = json.dumps(answer).encode()
    while data_out:
        data_out = data_out[os.write(out, data_out):]
    os._exit(0)


def _note_guard(result: dict[str, Any], guard: Any) -> None:
    """The guard's status as `dynamic:fs_guard` among the judge's checks: a note that passes (also when Landlock
    is unavailable: the reason says so), or a failure when a refused write broke the run. The status comes from
    the child: evidence, which gains a candidate nothing to forge (the guard only ever refuses its own writes)."""
    checks = result.setdefault("checks", [])
    if not isinstance(guard, dict):
        checks.append(("dynamic:fs_guard", False, "the candidate's process did not report the filesystem guard"))
        return
    refused = [r for n, ok, r in checks if not ok and guard.get("active") and fs_guard.looks_refused(str(r))]
    checks.append(("dynamic:fs_guard", not refused, f"a write outside the candidate's directories was refused: "
                   f"{refused[0]}" if refused else str(guard.get("summary", ""))))


def _private_dir(result_path: Path) -> Path:
    """A candidate child's own TMPDIR, HOME and caches (removed by the zygote when the child is gone)."""
    return result_path.with_name(result_path.stem + ".private")


def _forget(result_path: Path) -> None:
    """Remove what a finished child leaves in the session: its answer file and its private folder."""
    result_path.unlink(missing_ok=True)
    shutil.rmtree(_private_dir(result_path), ignore_errors=True)


def _read_answer(result_path: Path) -> dict[str, Any] | None:
    """The child's answer, or None when it wrote none or died writing it."""
    try:
        payload = json.loads(result_path.read_text())
    except (OSError, ValueError):
        payload = None
    return payload if isinstance(payload, dict) else None


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _lock_path(device: str) -> Path:
    """One lock file per physical GPU on this machine, shared by every evo run on it, so that two runs
    never time candidates on the same GPU at once."""
    index = device.split(":", 1)[1] if ":" in device else device
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and index.isdigit() and int(index) < len(visible):
        index = visible[int(index)]
    folder = Path(os.environ.get("EVO_LOCK_DIR", "/tmp/evo-gpu-locks"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"gpu-{index}.lock"


class Judge:
    """The worker's judge process (`evo/eval/judge.py`): started from a fresh interpreter, never forked from here."""

    def __init__(self, device: str, lock: GpuLock, session: Path):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log = open(session / f"judge-{device.replace(':', '-')}.log", "ab")  # noqa: SIM115 - the judge's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evo.eval.judge", "--control", str(theirs.fileno()), "--device", device,
             "--lock", str(lock.path)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True)
        theirs.close()
        log.close()
        self.control.setblocking(False)

    def hand_over(self, request: dict[str, Any], child_end: socket.socket) -> None:
        """Give the judge its end of a child's socket with what it needs to drive that child."""
        self.control.setblocking(True)
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], [child_end.fileno()])
        finally:
            self.control.setblocking(False)

    def reports(self) -> list[dict[str, Any]] | None:
        """The judgements that arrived (None once the judge is gone)."""
        got: list[dict[str, Any]] = []
        while True:
            try:
                msg = self.control.recv(1 << 22)
            except BlockingIOError:
                return got
            except OSError:
                return None
            if not msg:
                return None if not got else got
            got.append(json.loads(msg))

    def close(self) -> None:
        self.control.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _task_key(job: dict[str, Any]) -> str:
    return f"{job['task_root']}#{int(job['session_seed'])}"


def _compose(job: dict[str, Any], payload: dict[str, Any], judged: dict[str, Any]) -> dict[str, Any]:
    """The worker's answer from the child's exit and the judge's report: the checks and times are the judge's."""
    if payload.get("status") != "ok":
        return payload
    if "error" in judged:
        return {"status": "error", "error": f"the judge failed: {judged['error']}", "traceback": judged.get("traceback", "")}
    facts = {k: payload[k] for k in ("device_name", "l2_bytes") if k in payload}
    if job["kind"] == "reference":
        prepared = payload.get("prepared")
        if not isinstance(prepared, dict):
            return {"status": "error", "error": "the reference job gave no baselines"}
        return {"status": "ok", **facts, "prepared": {**prepared, "calibration": judged.get("calibration", {})}}
    result = {k: judged[k] for k in ("workloads", "checks", "bounds") if k in judged}
    result["seconds"] = {**{f"judge_{k}": v for k, v in judged.get("seconds", {}).items()},
                         **{k: v for k, v in (payload.get("seconds") or {}).items() if isinstance(v, (int, float))}}
    guards = judged.get("guards") if isinstance(judged.get("guards"), dict) else {}
    _note_guard(result, guards.get("fs"))
    net = guards.get("net")
    active = isinstance(net, dict) and net.get("active") is True
    result["checks"].append(("dynamic:net_guard", active, str(net.get("summary", "")) if isinstance(net, dict) else
                             "the candidate's process did not report its network isolation before it ran"))
    return {"status": "ok", **facts, "result": result}


def serve(device: str, session: Path, parallel: int) -> None:
    """Read jobs from stdin and answer each when its child has exited and the judge has reported on it."""
    session.mkdir(parents=True, exist_ok=True)
    lock = GpuLock(_lock_path(device))
    judge = Judge(device, lock, session)
    running: dict[int, tuple[dict[str, Any], float, Path]] = {}
    exited: dict[str, tuple[dict[str, Any], dict[str, Any], float]] = {}  # child gone, judge not yet heard
    judged: dict[str, dict[str, Any]] = {}  # judge heard, child not yet gone
    answered: set[str] = set()  # timed out or killed: a late judgement is dropped
    queue: list[dict[str, Any]] = []
    os.set_blocking(sys.stdin.fileno(), False)
    buf = b""
    stdin_open = True
    out = sys.stdout

    def answer(job: dict[str, Any], payload: dict[str, Any]) -> None:
        out.write(json.dumps({"id": job["id"], **payload}) + "\n")
        out.flush()

    datas: dict[tuple[str, int], WorkloadData] = {}

    def data_for(job: dict[str, Any]) -> WorkloadData:
        """The task's inputs, generated here once so that every forked child inherits them."""
        key = (job["task_root"], int(job["session_seed"]))
        if key not in datas:
            while len(datas) >= 2:  # `evo bench` walks the suite task by task: keep the newest only
                datas.pop(next(iter(datas)))
            reference = load_module(Path(job["task_root"]) / "reference.py", "evo_reference_zygote")
            torch.set_num_threads(min(8, os.cpu_count() or 1))
            datas[key] = WorkloadData(reference, device, key[1], BenchConfig(**job.get("config", {})))
            torch.set_num_threads(1)
        return datas[key]

    next_memory_poll = 0.0
    print(json.dumps({"ready": True, "device": device, "pid": os.getpid()}), flush=True)
    try:
        while stdin_open or queue or running or exited:
            if stdin_open:
                try:
                    chunk = os.read(sys.stdin.fileno(), 1 << 16)
                    if chunk == b"":
                        stdin_open = False
                    buf += chunk
                except BlockingIOError:
                    pass
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        queue.append(json.loads(line))
            while queue and len(running) < parallel:
                job = queue.pop(0)
                result_path = session / f"result-{job['id']}.json"
                result_path.unlink(missing_ok=True)
                try:
                    data = data_for(job)
                except Exception as e:  # noqa: BLE001 - a broken task fails its jobs, not the worker
                    answer(job, {"status": "error", "error": f"cannot make the task's inputs: {type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-3000:], "wall_s": 0.0})
                    continue
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                request = {"id": job["id"], "kind": job["kind"], "key": _task_key(job), "task_root": job["task_root"],
                           "session_seed": job["session_seed"], "config": job.get("config", {}),
                           "expected_dir": job.get("expected_dir"), "prepared": job.get("prepared", {}),
                           "workdir": job.get("workdir")}
                judge.hand_over(request, theirs)
                theirs.close()
                pid = os.fork()
                if pid == 0:
                    _child_main(job, device, data, lock, result_path, mine, [judge.control.fileno()])
                mine.close()
                running[pid] = (job, time.monotonic(), result_path)
            reports = judge.reports()
            if reports is None:
                for job, _, elapsed in list(exited.values()):
                    answer(job, {"status": "error", "error": "the judge process exited", "wall_s": elapsed})
                exited.clear()
                raise SystemExit("the judge process exited")
            for r in reports:
                job_id = str(r.get("id"))
                if job_id in answered:
                    answered.discard(job_id)
                elif job_id in exited:
                    job, payload, elapsed = exited.pop(job_id)
                    answer(job, {**_compose(job, payload, r.get("judged") or {}), "wall_s": elapsed})
                else:
                    judged[job_id] = r.get("judged") or {}
            now = time.monotonic()
            for pid, (job, started, result_path) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                elapsed = time.monotonic() - started
                job_id = str(job["id"])
                if done == 0:
                    kind = None
                    if elapsed > float(job.get("timeout_s", 120)):
                        kind = ("timeout", f"exceeded {job.get('timeout_s', 120)} s; process group killed")
                    elif now >= next_memory_poll and _private_bytes(pid) > int(job.get("memory_mb", 16384)) * 2**20:
                        kind = ("memory", f"exceeded memory limit of {job.get('memory_mb')} MB")
                    if kind is not None:
                        _kill_group(pid)
                        os.waitpid(pid, 0)
                        del running[pid]
                        _forget(result_path)
                        if judged.pop(job_id, None) is None:
                            answered.add(job_id)
                        answer(job, {"status": kind[0], "error": kind[1], "wall_s": elapsed})
                    continue
                _kill_group(pid)  # anything the child left running in its session
                del running[pid]
                payload = _read_answer(result_path)
                _forget(result_path)
                if payload is None and os.WIFSIGNALED(status):
                    payload = {"status": "crashed", "error": f"killed by {signal.Signals(os.WTERMSIG(status)).name}"}
                elif payload is None:
                    payload = {"status": "crashed", "error": f"exited with code {os.WEXITSTATUS(status)} before answering"}
                log = Path(job["workdir"]) / "child.log"
                if log.is_file():
                    payload["log_tail"] = log.read_text(errors="replace")[-2000:]
                if job_id in judged:
                    answer(job, {**_compose(job, payload, judged.pop(job_id)), "wall_s": elapsed})
                else:  # the judge reports once it has seen the child's socket close
                    exited[job_id] = (job, payload, elapsed)
            if now >= next_memory_poll:
                next_memory_poll = now + MEMORY_POLL_S
            time.sleep(0.005)
    finally:
        judge.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo.eval.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0", help="cuda:N, or cpu (Triton's interpreter)")
    parser.add_argument("--session", type=Path, required=True, help="folder for locks and answers")
    parser.add_argument("--parallel", type=int, default=4, help="children alive at once (compiling in parallel)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine stops us by closing stdin
    serve(args.device, args.session, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
