"""The judge's processes: the lead the worker starts (`python -m evo.eval.judge_process`), its helpers, and
how children are shared among them (the judgement itself: `evo/eval/judge.py`).

One judge process judged every child of a worker, one thread each. On an H200, 16 and 24 children gave the
same throughput, and the judge's own stages (unpacking outputs, comparing them, the recheck) took 3 to 4 times
longer at 24 than at 16 while the children's GPU stages did not (BENCHMARKS.md, session 9): its threads
queued, we read, for one interpreter lock and one CUDA context, and the whole harness waited on it (the
helpers' gain is still to be measured on a GPU). So the lead judge (the process the worker
starts) starts helpers, each a fresh interpreter of this module that never ran candidate code, and hands
each new child to whichever judge (itself included) is judging the fewest.

Trust is as for the lead: a helper is non-dumpable, started by the lead (never forked from a process that
held a candidate), and learns a task's secrets (the timing plan: seeds and mask keys) from the lead alone,
over its own socket. A task's expected outputs are read from the reference job's files by every judge,
and deleted by the lead once each helper has said it holds them. Each judge keeps its own copy on the
device: GPU memory for expected outputs grows with the number of judges.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from evo.eval import wire
from evo.eval.digest import prepare_digest
from evo.eval.judge import (
    Expected,
    Session,
    calibrate,
    delete_expected,
    judge_candidate,
    load_expected,
    plan_task,
)
from evo.eval.reference_data import NO_REFERENCE_YET, TASKS_HELD
from evo.eval.timing import BenchConfig

REPORT_BYTES = 1 << 22  # a judgement's record (as the worker reads it)
# A helper that has not read a task's expected outputs in this long is let go (killed; the others judge): the
# reference child holds the GPU alone until every judge holds them, so one hung helper would stall the GPU.
SHARE_TIMEOUT_S = float(os.environ.get("EVO_JUDGE_SHARE_TIMEOUT_S", "120"))


class JudgeHelpers:
    """The lead judge's helpers: started here, handed children and tasks, their reports relayed by `forward`."""

    def __init__(self, n: int, argv: list[str], forward: Callable[[dict[str, Any]], None]):
        self.forward = forward
        self._lock = threading.Lock()
        self._busy = [0] * (n + 1)  # children being judged; index 0 is the lead itself
        self._ids: list[set[str]] = [set() for _ in range(n + 1)]  # per helper: requests it has not reported
        self._acks: list[threading.Semaphore] = [threading.Semaphore(0) for _ in range(n + 1)]
        self._ack_errors: list[str] = [""] * (n + 1)
        self._alive = [True] * (n + 1)
        self._sharing = threading.Lock()  # one task shared at a time: each ack answers the one share waiting
        self._socks: list[socket.socket | None] = [None]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(1, n + 1):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "evo.eval.judge_process", "--helper", "--control", str(theirs.fileno()), *argv],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True))
            theirs.close()
            self._socks.append(mine)
            threading.Thread(target=self._relay, args=(i,), daemon=True).start()

    def pick(self) -> int:
        """The judge (0: the lead) judging the fewest children now, counted as judging one more."""
        with self._lock:
            i = min((j for j in range(len(self._busy)) if self._alive[j]), key=lambda j: self._busy[j])
            self._busy[i] += 1
            return i

    def done_here(self) -> None:
        """The lead finished judging a child."""
        with self._lock:
            self._busy[0] -= 1

    def hand_over(self, i: int, req: dict[str, Any], fds: list[int]) -> None:
        """Give helper `i` a child's two sockets to judge; if it is gone, the request fails at once."""
        sock = self._socks[i]
        with self._lock:
            self._ids[i].add(str(req["id"]))
        try:
            assert sock is not None
            socket.send_fds(sock, [json.dumps({"op": "judge", "req": req}).encode()], fds)
        except OSError:
            self._gone(i)

    def share(self, msg: dict[str, Any]) -> None:
        """Tell every helper about a task (`op: expected`) and wait until each holds it; one that cannot is let
        go (the others judge the task's children)."""
        with self._sharing:
            self._share(msg)

    def _share(self, msg: dict[str, Any]) -> None:
        sent = []
        for i in range(1, len(self._socks)):
            sock = self._socks[i]
            if not self._alive[i] or sock is None:
                continue
            try:
                sock.send(json.dumps(msg).encode())
                sent.append(i)
            except OSError:
                self._gone(i)
        for i in sent:
            if not self._acks[i].acquire(timeout=SHARE_TIMEOUT_S):
                self._ack_errors[i] = f"it did not hold the task within {SHARE_TIMEOUT_S:.0f} s"
                self.procs[i - 1].kill()
                self.procs[i - 1].wait(timeout=10)
            if self._ack_errors[i]:  # it judges nothing more: the others hold the task
                print(f"helper judge {i} could not hold the task: {self._ack_errors[i]}", file=sys.stderr, flush=True)
                self._gone(i)

    def close(self) -> None:
        for sock in self._socks[1:]:
            if sock is not None:
                sock.close()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def _relay(self, i: int) -> None:
        sock = self._socks[i]
        assert sock is not None
        while True:
            try:
                msg = sock.recv(REPORT_BYTES)
            except OSError:
                msg = b""
            if not msg:
                self._gone(i)
                return
            record = json.loads(msg)
            if record.get("ack") is not None:  # a task's expected outputs loaded, or why not
                self._ack_errors[i] = "" if record["ack"] is True else str(record.get("error", "failed"))
                self._acks[i].release()
                continue
            with self._lock:
                self._busy[i] -= 1
                self._ids[i].discard(str(record.get("id")))
            self.forward(record)

    def _gone(self, i: int) -> None:
        """A helper that died costs the children it was judging their judgement, never the worker's wait."""
        with self._lock:
            if not self._alive[i]:
                return
            self._alive[i] = False
            orphans, self._ids[i] = sorted(self._ids[i]), set()
            self._busy[i] = 0
            sock = self._socks[i]
        if not self._ack_errors[i]:
            self._ack_errors[i] = "the helper judge exited"
            self._acks[i].release()  # a `share` waiting on it goes on
        if sock is not None:  # shut, not closed: a relay blocked in recv on it wakes, and the helper sees the end
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for job_id in orphans:
            self.forward({"id": job_id, "judged": {"error": "the helper judge judging it exited"}})


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _nondumpable() -> None:
    """No core dumps, no /proc/PID/mem, no ptrace attach from processes of the same user (PR_SET_DUMPABLE 0)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Judging:
    """One judge process's tasks (each one's expected outputs) and its judgement of one child."""

    def __init__(self, device: str, lock_path: Path | None, checking_slots: int,
                 report: Callable[[dict[str, Any]], None], helpers: JudgeHelpers | None = None):
        self.device, self.report, self.helpers = device, report, helpers
        self.expected: dict[str, Expected] = {}
        # The judge's GPU work held off while any child times (`Session.on_gpu`).
        self.on_gpu: Callable[[], AbstractContextManager[Any]] = nullcontext
        if lock_path is not None:  # on a CPU too: the tests then take the same locks as a GPU's judge
            from evo.eval.gpu_lock import GpuLock

            self.on_gpu = GpuLock(lock_path, checking_slots).for_the_judge
        # The CUDA context made, and the digest's Triton kernel compiled and run, now. Not under the GPU lock: a
        # helper starts while the reference child may hold it alone, waiting for the lead, which waits for this one.
        prepare_digest(device)

    def hold(self, key: str, exp: Expected) -> None:
        self.expected[key] = exp
        while len(self.expected) > TASKS_HELD:  # the oldest task's go, as in the zygote
            self.expected.pop(next(iter(self.expected)))

    def child(self, req: dict[str, Any], child: socket.socket, clock: socket.socket) -> None:
        """Judge one child (its two sockets), or run the reference job's, and report."""
        s = Session(child, clock, self.device, self.on_gpu)
        try:
            config = BenchConfig(**req.get("config", {}))
            key = str(req["key"])
            if req["kind"] == "reference":
                self._reference(s, req, config, key)
                return
            exp = self.expected.get(key)
            if exp is None:
                self.report({"id": req["id"], "judged": {"error": "the judge holds no expected outputs for this task "
                                                         f"({NO_REFERENCE_YET} here, or its outputs were let go)"}})
                return
            judged = judge_candidate(s, exp, config, req.get("prepared", {}), str(req.get("workdir", "")),
                                     req.get("timed") is not False)
            self.report({"id": req["id"], "judged": {**judged, "judge_pid": os.getpid()}})
        except Exception as e:  # noqa: BLE001 - a broken judgement fails its job, never the judge
            self.report({"id": req["id"], "judged": {"error": f"{type(e).__name__}: {e}",
                                                     "traceback": traceback.format_exc()[-3000:]}})
        finally:
            child.close()
            clock.close()

    def _reference(self, s: Session, req: dict[str, Any], config: BenchConfig, key: str) -> None:
        exp = plan_task(Path(req["task_root"]), int(req["session_seed"]), self.device, config)
        wire.send(s.sock, {"op": "plan", "timing": {w: [list(p) for p in sets] for w, sets in exp.data.timing_plan.items()}})
        hello, _ = wire.recv(s.sock)
        if hello.get("ok") is not True:
            self.report({"id": req["id"], "judged": {"error": str(hello.get("error"))[:2000]}})
            return
        out_dir = Path(req["expected_dir"])
        try:
            # No GPU lock here: the reference child holds it alone (its timing lock) and waits for this judge's
            # calibration, so taking it would wait forever; nothing else times meanwhile, so nothing is disturbed.
            self.hold(key, load_expected(exp, self.device, out_dir))
            if self.helpers is not None:  # every helper reads the files too, before they go
                self.helpers.share({"op": "expected", "key": key, "task_root": req["task_root"],
                                    "session_seed": req["session_seed"], "config": req.get("config", {}),
                                    "expected_dir": str(out_dir), "plan": exp.data.timing_plan})
        finally:
            delete_expected(exp, out_dir)
        calibration = calibrate(s, self.expected[key], config)
        wire.send(s.sock, {"op": "bye"})
        self.report({"id": req["id"], "judged": {"calibration": calibration}})

    def hold_shared(self, msg: dict[str, Any]) -> None:
        """In a helper: the lead's plan of a task and its expected outputs, read from the reference job's files."""
        config = BenchConfig(**msg.get("config", {}))
        exp = plan_task(Path(msg["task_root"]), int(msg["session_seed"]), self.device, config, msg["plan"])
        # Without the GPU lock, as the lead's own read (`_reference`): the reference child holds it until the
        # lead has calibrated, and the lead waits for this share first.
        self.hold(str(msg["key"]), load_expected(exp, self.device, Path(msg["expected_dir"])))


def _reporter(sock: socket.socket) -> Callable[[dict[str, Any]], None]:
    send_lock = threading.Lock()

    def report(msg: dict[str, Any]) -> None:
        with send_lock:  # one record per report (a SOCK_SEQPACKET pair)
            sock.send(json.dumps(msg).encode())
    return report


def serve(control: socket.socket, device: str, lock_path: Path | None, checking_slots: int = 4,
          helpers: int = 0) -> None:
    """Take requests from the worker; one thread per child, or the child handed to a helper judge."""
    report = _reporter(control)
    argv = ["--device", device, "--checking-slots", str(checking_slots)] + \
        (["--lock", str(lock_path)] if lock_path is not None else [])
    pool = JudgeHelpers(helpers, argv, report) if helpers > 0 else None
    judging = Judging(device, lock_path, checking_slots, report, pool)

    def judge_here(req: dict[str, Any], child: socket.socket, clock: socket.socket) -> None:
        try:
            judging.child(req, child, clock)
        finally:
            if pool is not None and req["kind"] != "reference":
                pool.done_here()

    try:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
            except OSError:
                return
            if not msg:
                return
            req = json.loads(msg)
            if len(fds) != 2:  # the worker hands over a child's two sockets together, or nothing
                close_fds(fds)
                continue
            if pool is not None and req["kind"] != "reference":
                i = pool.pick()
                if i > 0:
                    pool.hand_over(i, req, fds)
                    close_fds(fds)
                    continue
            child, clock = (socket.socket(fileno=fd) for fd in fds)
            threading.Thread(target=judge_here, args=(req, child, clock), daemon=True).start()
    finally:
        if pool is not None:
            pool.close()


def serve_helper(lead: socket.socket, device: str, lock_path: Path | None, checking_slots: int = 4) -> None:
    """A helper judge (`evo/eval/judge_pool.py`): the lead's tasks and children, reports back to the lead."""
    report = _reporter(lead)
    judging = Judging(device, lock_path, checking_slots, report)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(lead, 1 << 20, 2)
        except OSError:
            return
        if not msg:
            return
        rec = json.loads(msg)
        if rec.get("op") == "expected":
            try:
                judging.hold_shared(rec)
                report({"ack": True})
            except Exception as e:  # noqa: BLE001 - the lead lets this helper go and judges without it
                report({"ack": False, "error": f"{type(e).__name__}: {e}"})
        elif rec.get("op") == "judge" and len(fds) == 2:
            child, clock = (socket.socket(fileno=fd) for fd in fds)
            threading.Thread(target=judging.child, args=(rec["req"], child, clock), daemon=True).start()
        else:
            close_fds(fds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo.eval.judge_process", description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", type=int, required=True, help="file descriptor of the worker's socket "
                        "(of the lead judge's, with --helper)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lock", type=Path, default=None, help="the GPU's lock file (see evo.eval.gpu_lock)")
    parser.add_argument("--checking-slots", type=int, default=4, help="the worker's (see evo.eval.gpu_lock)")
    parser.add_argument("--helpers", type=int, default=0, help="helper judges this lead starts (evo.eval.judge_pool)")
    parser.add_argument("--helper", action="store_true", help="be a helper judge of the lead at --control")
    args = parser.parse_args(argv)
    _nondumpable()
    # One thread per child: a thread that times a call must not wait 5 ms (the default) for another's GIL.
    sys.setswitchinterval(0.0005)
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    if args.device.startswith("cuda"):
        torch.cuda.set_device(args.device)
    sock = socket.socket(fileno=args.control)
    if args.helper:
        serve_helper(sock, args.device, args.lock, args.checking_slots)
    else:
        serve(sock, args.device, args.lock, args.checking_slots, max(0, args.helpers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
