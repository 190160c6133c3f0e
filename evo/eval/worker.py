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

Trust: the zygote never imports a candidate and holds no expected output. Beside it runs the judge
(`evo/eval/judge.py`), started from a fresh interpreter: for every child the zygote forks it hands the judge
one end of a socket pair, and the judge drives the child (`evo/eval/worker_child.py`, `evo/eval/bench.py`):
it holds the expected outputs, compares every output the child sends, and bounds every reported time with its
own clock. The worker's answer for a job is the judge's report, once the child has exited; nothing the
candidate's child writes decides a check or a time. Children are Landlocked and without the network
(`fs_guard`, `net_guard`) before the candidate is imported. See docs/auditor.md, "What runs where".
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# The imports a child would otherwise pay for, done once before any fork.
import torch
import triton  # noqa: F401

from evo.eval import fs_guard, wire
from evo.eval.families.base import task_hash
from evo.eval.gpu_lock import GpuLock
from evo.eval.lock_watch import POLL_S, LockWatch
from evo.eval.procfs import children
from evo.eval.reference_data import TASKS_HELD, WorkloadData
from evo.eval.timing import BenchConfig
from evo.eval.worker_child import child_main, private_dir
from evo.program import MAIN_FILE
from evo.task import load_module, load_task

MEMORY_POLL_S = 0.5
# A child's waits on the GPU lock are not charged to its time limit (`LockWatch`); its wall time is, past this many.
WALL_LIMITS = 4


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


def _forget(result_path: Path) -> None:
    """Remove what a finished child leaves in the session: its answer file and its private folder."""
    result_path.unlink(missing_ok=True)
    shutil.rmtree(private_dir(result_path), ignore_errors=True)


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


def _adopt_orphans() -> None:
    """Make this worker the parent of every process its children detach (a double fork, whose middle process
    exits): they come back here, not to init, where `_kill_orphans` finds them (PR_SET_CHILD_SUBREAPER)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_orphans(known: set[int]) -> None:
    """Kill, and reap once dead, every child of this worker that it did not start itself: what a candidate
    detached, which would outlive its kill and could keep the GPU or its lock."""
    for pid in children(os.getpid()):
        if pid in known:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, os.WNOHANG)  # one still dying is reaped by a later pass
        except (ProcessLookupError, ChildProcessError):
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


# One judge process with 16 children looked like the harness's bottleneck on an H200 (evo/eval/judge_process.py).
CHILDREN_PER_JUDGE = 8


def judges_for(parallel: int) -> int:
    """Judge processes for `parallel` children, by default."""
    return -(-parallel // CHILDREN_PER_JUDGE)


class Judge:
    """The worker's lead judge process (`evo/eval/judge_process.py`, with `helpers` more it starts itself):
    started from a fresh interpreter, never forked from here."""

    def __init__(self, device: str, lock: GpuLock, session: Path, helpers: int = 0):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log = open(session / f"judge-{device.replace(':', '-')}.log", "ab")  # noqa: SIM115 - the judge's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evo.eval.judge_process", "--control", str(theirs.fileno()), "--device", device,
             "--lock", str(lock.path), "--checking-slots", str(len(lock.slots)), "--helpers", str(helpers)],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        theirs.close()
        log.close()
        self.control.setblocking(False)

    def hand_over(self, request: dict[str, Any], child_end: socket.socket, clock_end: socket.socket) -> None:
        """Give the judge its ends of a child's sockets (requests, and timed calls) with what it needs to drive
        that child."""
        self.control.setblocking(True)
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], [child_end.fileno(), clock_end.fileno()])
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
    return f"{job['task']}#{job['task_hash']}#{int(job['session_seed'])}"


def _masked_dir(session: Path, job: dict[str, Any]) -> Path:
    """Where a task's reference job writes the timing's masked sets, for the zygote (evo/eval/masked.py)."""
    return session / f"masked-{hashlib.sha256(_task_key(job).encode()).hexdigest()[:16]}"


class JobError(Exception):
    """A job this worker cannot take (an unknown task, a task folder that differs from the engine's, bad files)."""


_TASKS: dict[str, tuple[Path, str]] = {}


def _resolve(job: dict[str, Any], session: Path) -> dict[str, Any]:
    """The job with this machine's paths: the task found by name here (its folder's hash must be the engine's),
    a fresh work folder holding the candidate's files, the reference's folder for expected outputs."""
    name = str(job.get("task", ""))
    if name not in _TASKS or _TASKS[name][1] != job.get("task_hash"):  # new, or its folder changed since
        try:
            task = load_task(name)
        except Exception as e:  # noqa: BLE001 - named in the answer
            raise JobError(f"this worker cannot find task {name!r}: {e}") from e
        _TASKS[name] = (task.root, task_hash(task, fresh=True))
    root, digest = _TASKS[name]
    if digest != job.get("task_hash"):
        raise JobError(f"task {name!r} differs here from the engine's (folder hash {digest} here, "
                       f"{job.get('task_hash')} there): copy the task's folder to this machine again")
    workdir = session / f"job-{job['id']}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    local = {**job, "task_root": str(root), "workdir": str(workdir)}
    if job["kind"] == "reference":
        local["expected_dir"] = str(session / f"expected-{job['id']}")
        Path(local["expected_dir"]).mkdir(parents=True, exist_ok=True)
        local["masked_dir"] = str(_masked_dir(session, job))
        return local
    files = job.get("files")
    if not isinstance(files, dict) or MAIN_FILE not in files:
        raise JobError(f"a candidate job carries its files, {MAIN_FILE} among them")
    for rel, text in files.items():
        path = (workdir / str(rel)).resolve()
        if not path.is_relative_to(workdir.resolve()) or not isinstance(text, str):
            raise JobError(f"file path {rel!r} leaves the candidate's folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    local["candidate"] = str(workdir / MAIN_FILE)
    return local


def _compose(job: dict[str, Any], payload: dict[str, Any], judged: dict[str, Any]) -> dict[str, Any]:
    """The worker's answer from the child's exit and the judge's report: the checks and times are the judge's."""
    if "error" in judged:  # the judge failed (no reference yet, its helper gone): the child's error is only its
        # socket closed under it, and says less
        return {"status": "error", "error": f"the judge failed: {judged['error']}", "traceback": judged.get("traceback", "")}
    if payload.get("status") != "ok":
        return payload
    facts = {k: payload[k] for k in ("device_name", "l2_bytes") if k in payload}
    if job["kind"] == "reference":
        prepared = payload.get("prepared")
        if not isinstance(prepared, dict):
            return {"status": "error", "error": "the reference job gave no baselines"}
        return {"status": "ok", **facts, "prepared": {**prepared, "calibration": judged.get("calibration", {})}}
    result = {k: judged[k] for k in ("workloads", "checks", "bounds", "judge_pid") if k in judged}
    result["seconds"] = {**{f"judge_{k}": v for k, v in judged.get("seconds", {}).items()},
                         **{k: v for k, v in (payload.get("seconds") or {}).items() if isinstance(v, (int, float))}}
    guards = judged.get("guards") if isinstance(judged.get("guards"), dict) else {}
    _note_guard(result, guards.get("fs"))
    net = guards.get("net")
    active = isinstance(net, dict) and net.get("active") is True
    result["checks"].append(("dynamic:net_guard", active, str(net.get("summary", "")) if isinstance(net, dict) else
                             "the candidate's process did not report its network isolation before it ran"))
    # What the candidate printed (its traceback included) travels with the answer: shown, never believed.
    return {"status": "ok", **facts, "result": result, "log_tail": str(payload.get("log_tail", ""))}


def serve(device: str, session: Path, parallel: int, checking_slots: int = 4, judges: int | None = None) -> None:
    """Read jobs from stdin and answer each when its child has exited and the judge has reported on it.
    `judges`: judge processes (one per 8 children when None)."""
    session.mkdir(parents=True, exist_ok=True)
    lock = GpuLock(_lock_path(device), checking_slots)
    judges = judges_for(parallel) if judges is None else judges
    judge = Judge(device, lock, session, judges - 1)
    watch = LockWatch(lock)
    _adopt_orphans()
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
        # The job's folders go before its answer: whoever reads the answer finds them gone, never half removed.
        for folder in (job.get("workdir"), job.get("expected_dir")):  # this worker's own folders for the job
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        out.write(json.dumps({"id": job["id"], **payload}) + "\n")
        out.flush()

    datas: dict[tuple[str, int], tuple[WorkloadData, Path]] = {}

    def data_for(job: dict[str, Any]) -> WorkloadData:
        """The task's inputs, generated here once so that every forked child inherits them; the timing's masked
        sets, read once its reference job has written them (a new reference job makes new ones)."""
        key = (job["task_root"], int(job["session_seed"]))
        if key not in datas:
            while len(datas) >= TASKS_HELD:  # the oldest task's go (its evaluator runs its reference job again)
                _, gone = datas.pop(next(iter(datas)))
                shutil.rmtree(gone, ignore_errors=True)
            reference = load_module(Path(job["task_root"]) / "reference.py", "evo_reference_zygote")
            torch.set_num_threads(min(8, os.cpu_count() or 1))
            datas[key] = (WorkloadData(reference, device, key[1], BenchConfig(**job.get("config", {}))),
                          _masked_dir(session, job))
            torch.set_num_threads(1)
        data, masked_dir = datas[key]
        if job["kind"] == "reference":
            data.masked = {}
        elif not data.masked:
            data.load_masked(masked_dir)
        return data

    next_memory_poll = next_lock_poll = 0.0
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
                    if not line.strip():
                        continue
                    job = json.loads(line)
                    try:
                        queue.append(_resolve(job, session))
                    except JobError as e:
                        answer(job, {"status": "error", "error": str(e), "wall_s": 0.0})
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
                wire.widen(mine)
                wire.widen(theirs)
                clock_mine, clock_theirs = wire.clock_pair()
                request = {"id": job["id"], "kind": job["kind"], "key": _task_key(job), "task_root": job["task_root"],
                           "session_seed": job["session_seed"], "config": job.get("config", {}),
                           "expected_dir": job.get("expected_dir"), "prepared": job.get("prepared", {}),
                           "workdir": job.get("workdir"), "timed": job.get("timed") is not False}
                judge.hand_over(request, theirs, clock_theirs)
                theirs.close()
                clock_theirs.close()
                pid = os.fork()
                if pid == 0:
                    child_main(job, device, data, lock, result_path, mine, clock_mine, [judge.control.fileno()])
                mine.close()
                clock_mine.close()
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
            if now >= next_lock_poll:
                watch.poll(running.keys(), now)
                _kill_orphans({judge.proc.pid, *running})
                next_lock_poll = now + POLL_S
            for pid, (job, started, result_path) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                elapsed = time.monotonic() - started
                job_id = str(job["id"])
                if done == 0:
                    kind = None
                    limit = float(job.get("timeout_s", 120))
                    held = watch.held_too_long(pid, now) if job["kind"] == "candidate" else None
                    if elapsed - watch.waited(pid) > limit:
                        kind = ("timeout", f"exceeded {job.get('timeout_s', 120)} s; process group killed")
                    elif elapsed > WALL_LIMITS * limit:
                        kind = ("timeout", f"ran {elapsed:.0f} s, waits for the GPU included: {WALL_LIMITS} times its "
                                f"limit of {job.get('timeout_s', 120)} s; process group killed")
                    elif held is not None:
                        kind = ("timeout", f"held the GPU's lock {held:.0f} s on end (the limit is {watch.limit_s:.0f} s),"
                                " keeping every other child off the GPU; process group killed")
                    elif now >= next_memory_poll and _private_bytes(pid) > int(job.get("memory_mb", 16384)) * 2**20:
                        kind = ("memory", f"exceeded memory limit of {job.get('memory_mb')} MB")
                    if kind is not None:
                        _kill_group(pid)
                        os.waitpid(pid, 0)
                        del running[pid]
                        watch.forget(pid)
                        _forget(result_path)
                        if judged.pop(job_id, None) is None:
                            answered.add(job_id)
                        answer(job, {"status": kind[0], "error": kind[1], "wall_s": elapsed})
                    continue
                _kill_group(pid)  # anything the child left running in its session
                del running[pid]
                watch.forget(pid)
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
    parser.add_argument("--checking-slots", type=int, default=4,
                        help="children (and the judge's comparisons) on the GPU at once for correctness checks")
    parser.add_argument("--judges", type=int, default=None,
                        help="judge processes sharing the children (default: one per 8 children)")
    args = parser.parse_args(argv)
    if args.parallel < 1 or args.checking_slots < 1 or (args.judges is not None and args.judges < 1):
        parser.error("--parallel, --checking-slots and --judges are at least 1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine stops us by closing stdin
    serve(args.device, args.session, args.parallel, args.checking_slots, args.judges)
    return 0


if __name__ == "__main__":
    sys.exit(main())
