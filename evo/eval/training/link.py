"""A sandboxed child of the training harness, driven over a unix socket, and watched from outside.

The trusted side (the harness, the scorer) listens on a socket in the child's work dir, starts the child in
the CPU/GPU sandbox (`evo/eval/sandbox.py`: its own pid, mount and network namespaces where the OS allows,
writes only beneath its work dir) in a thread, and accepts the child's connection. The kernel tells the
listener the child's pid (`SO_PEERCRED`, translated into our pid namespace), so that the trusted side can
read, from /proc and without asking the child, which processes the sandbox still holds and how much CPU
each of the child's threads burns (`quiet`): evidence that no candidate code can edit.

    with ChildLink(argv, workdir, limits, env) as link:
        link.accept(timeout)                  # the child connected; link.pid is its pid here
        wire.send(link.sock, {...}); wire.recv(link.sock, ...)
    link.result                               # the SandboxResult once the child is gone
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from evo.eval.procfs import children, stat_fields
from evo.eval.sandbox import Limits, SandboxResult, run_sandboxed

SOCKET_NAME = "link.sock"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class LinkError(Exception):
    """The child never connected (it died first, or hung): the candidate's failure."""


class ChildLink:
    """One sandboxed child and the socket to it; see the module docstring."""

    def __init__(self, argv: Sequence[str], workdir: Path, limits: Limits, env: dict[str, str]):
        self.workdir = Path(workdir)
        self.argv, self.limits, self.env = list(argv), limits, env
        self.result: SandboxResult | None = None
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.started = 0.0
        self.write_guard: str | None = None  # the child's own write guard's summary, where it made it (GPU)
        self._done = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A path through the folder's descriptor: a run dir's path may pass the 108 bytes AF_UNIX allows.
        self._dirfd = os.open(self.workdir, os.O_PATH | os.O_DIRECTORY)
        self._listener.bind(f"/proc/self/fd/{self._dirfd}/{SOCKET_NAME}")
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._run, name="evo-train-child", daemon=True)

    def _run(self) -> None:
        try:
            self.result = run_sandboxed(self.argv, self.workdir, self.limits, self.env)
        finally:
            self._done.set()

    def start(self) -> ChildLink:
        """Start the child (the clock of its budget starts here)."""
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __enter__(self) -> ChildLink:
        return self.start() if not self.started else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accept(self, timeout: float) -> socket.socket:
        """Wait for the child's connection; a child that exits or hangs first raises `LinkError`."""
        deadline = time.monotonic() + timeout
        self._listener.settimeout(0.1)
        while True:
            try:
                conn, _ = self._listener.accept()
                break
            except TimeoutError:
                if self._done.is_set() or time.monotonic() > deadline:
                    raise LinkError(self.why_gone("before it connected")) from None
        pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        conn.settimeout(None)
        self.sock, self.pid = conn, pid
        return conn

    def why_gone(self, when: str) -> str:
        """One line on how the child ended (after it has), for a failure's message."""
        self._done.wait(self.limits.timeout_s + 10)
        r = self.result
        if r is None:
            return f"the child ended {when}"
        tail = [line for line in r.stderr_tail.strip().splitlines() if line.strip()]
        last = tail[-1][:300] if tail else ""
        return f"the child {r.reason} {when}" + (f": {last}" if last and last[:100] not in r.reason else "")

    def wait(self, timeout: float) -> SandboxResult | None:
        """Wait for the sandbox to finish (the child and all it started); None if it has not in time."""
        self._done.wait(timeout)
        return self.result

    def close(self) -> None:
        """Close the sockets and wait for the sandbox (its own deadline kills what is left)."""
        for s in (self.sock, self._listener):
            if s is not None:
                s.close()
        if self._thread.is_alive() or not self._done.is_set():
            if self.started:
                self._done.wait()
        try:
            os.close(self._dirfd)
        except OSError:
            pass


# ----------------------------------------------------------------------------- /proc, read from outside


def sandbox_processes(pid: int) -> list[int]:
    """Every live process of the child's sandbox but the child: the descendants of its parent (the sandbox's
    init, which adopts orphans and double forks) other than `pid` itself, zombies left out."""
    fields = stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return []
    parent = int(fields[1])
    found, todo = [], [parent]
    while todo:
        for kid in children(todo.pop()):
            todo.append(kid)
            state = stat_fields(f"/proc/{kid}/stat")
            if kid != pid and state is not None and state[0] not in ("Z", "X"):
                found.append(kid)
    return found


def thread_ticks(pid: int) -> dict[int, int]:
    """CPU time (user + system, clock ticks) of each thread of `pid`."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        f = stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if f is not None:
            out[int(tid)] = int(f[11]) + int(f[12])
    return out


def quiet(pid: int, window_s: float = 1.0, busy_share: float = 0.05) -> str | None:
    """None when, over `window_s`, no other process of the sandbox lives and no thread of `pid` uses more than
    `busy_share` of a core; otherwise what was found. Measured here, from /proc: the child cannot edit it.
    The share is low because a busy thread on a loaded machine gets only its part of a core, and a process
    whose model was taken has nothing left to do: it waits on its socket."""
    others = sandbox_processes(pid)
    if others:
        return f"{len(others)} other process(es) of the training sandbox still running (pids {others[:5]})"
    # A quarter of a second first: OpenMP's workers may spin a moment after their last parallel region (the
    # state_dict's copy) before they sleep; a window of time is what is measured, there is no event to await.
    time.sleep(0.25)
    before = thread_ticks(pid)
    time.sleep(window_s)
    after = thread_ticks(pid)
    limit = busy_share * window_s * _TICKS
    busy = {tid: after[tid] - before.get(tid, 0) for tid in after if after[tid] - before.get(tid, 0) > limit}
    if busy:
        worst = max(busy.values()) / (window_s * _TICKS)
        return (f"{len(busy)} thread(s) of the training process kept working after its model was taken "
                f"(up to {worst:.0%} of a core over {window_s:g} s)")
    others = sandbox_processes(pid)
    if others:
        return f"{len(others)} other process(es) of the training sandbox still running (pids {others[:5]})"
    return None
