"""Who holds a GPU's lock and who waits for it, read by the worker from outside its children (/proc/locks).

The GPU lock (`evo/eval/gpu_lock.py`) is a set of flocks that the children take themselves, so a candidate can
take them too: a thread that takes the lock's file and keeps it stalled every other child and the judge until
the worker killed it at its time limit (the candidate of `tests/test_lock_watch.py`). The kernel's table of
flocks says who holds which file and who waits, by process, and no candidate can change it. From it the
worker (`evo/eval/worker.py`):

- stops a candidate's child that has held any of the lock's files for `limit_s` on end while not itself
  waiting on another process (its own threads do not count: waiting on oneself is holding);
- does not count against a child's time limit the seconds it waited on a lock file that another process
  held, nor those while a child kept the judge (whose answers the others wait on) off the GPU, so an honest
  neighbour of such a candidate is not timed out for it.

A process is a child's when the child is it or one of its ancestors (a candidate's threads and the processes
it forks). Polling costs one read of /proc/locks a `POLL_S`; where there is no /proc/locks, nothing is watched.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from evo.eval.gpu_lock import GpuLock
from evo.eval.procfs import stat_fields

PROC_LOCKS = Path("/proc/locks")
POLL_S = 0.25
# Longer than an honest child's hold: a candidate's timing holds the lock alone for about ten calls a workload
# (`BenchConfig`), so 60 s is over half a second a call on every workload, a kernel that scores near zero; and
# well inside a kernel job's time limit (120 s and more), so that a neighbour kept waiting still has its own.
HOLD_LIMIT_S = float(os.environ.get("EVO_GPU_HOLD_LIMIT_S", "60"))


def _file_key(path: Path) -> str:
    """A file as /proc/locks names it: major:minor:inode, the device numbers in hex."""
    st = os.stat(path)
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def _parent(pid: int) -> int | None:
    fields = stat_fields(f"/proc/{pid}/stat")
    return None if fields is None else int(fields[1])


class LockWatch:
    """The lock's holders and waiters by child, polled; see the module's docstring."""

    def __init__(self, lock: GpuLock, limit_s: float = HOLD_LIMIT_S):
        self.limit_s = limit_s
        self.enabled = PROC_LOCKS.is_file()
        self._files = {_file_key(p) for p in (lock.path, lock.gate, *lock.slots)} if self.enabled else set()
        self._holding_since: dict[int, float] = {}
        self._waited: dict[int, float] = {}
        self._last: float | None = None

    def waited(self, child: int) -> float:
        """Seconds `child` has waited on a lock file that another process held (polled, so to a `POLL_S`)."""
        return self._waited.get(child, 0.0)

    def held_too_long(self, child: int, now: float) -> float | None:
        """How long `child` has held the lock on end, not waiting on another process, if past the limit."""
        since = self._holding_since.get(child)
        return None if since is None or now - since < self.limit_s else now - since

    def forget(self, child: int) -> None:
        self._holding_since.pop(child, None)
        self._waited.pop(child, None)

    def poll(self, children: Collection[int], now: float) -> None:
        """Read the kernel's table of flocks; attribute each entry on the lock's files to a child, or to none."""
        if not self.enabled:
            return
        try:
            table = PROC_LOCKS.read_text()
        except OSError:
            return
        owner: dict[int, int | None] = {}
        held: dict[str, list[tuple[int | None, bool]]] = {}  # file: (child or None, exclusive) of each holder
        waits: list[tuple[int | None, str, bool]] = []  # (child or None, file, exclusive)
        for line in table.splitlines():
            parts = line.split()
            waiting = len(parts) > 1 and parts[1] == "->"
            if waiting:
                del parts[1]
            if len(parts) < 6 or parts[1] != "FLOCK" or parts[5] not in self._files:
                continue
            pid = int(parts[4])
            if pid not in owner:
                owner[pid] = self._child_of(pid, children)
            entry = (owner[pid], parts[5], parts[3] == "WRITE")
            if waiting:
                waits.append(entry)
            else:
                held.setdefault(parts[5], []).append((entry[0], entry[2]))
        # A process waits on another when some holder of that file, in a mode that excludes its request, is not
        # itself: a child's wait on its own threads' lock is a hold it chose. A process that is no child (the
        # judge) kept off the GPU by a child keeps every other child waiting on its answers too.
        blocked: set[int] = set()
        keeping_the_judge: set[int] = set()
        for child, file, exclusive in waits:
            by = {who for who, mode in held.get(file, []) if who != child and (exclusive or mode)}
            if child is not None and by:
                blocked.add(child)
            elif child is None:
                keeping_the_judge |= {who for who in by if who is not None}
        holders = {who for entries in held.values() for who, _ in entries if who is not None}
        step = 0.0 if self._last is None else now - self._last
        self._last = now
        for child in blocked | (set(children) - keeping_the_judge if keeping_the_judge else set()):
            self._waited[child] = self._waited.get(child, 0.0) + step
        for child in list(self._holding_since):
            if child not in holders or child in blocked:
                del self._holding_since[child]
        for child in holders - blocked:
            self._holding_since.setdefault(child, now)

    @staticmethod
    def _child_of(pid: int, children: Collection[int]) -> int | None:
        """The child that `pid` is, or descends from (a thread's entry carries its process's pid)."""
        for _ in range(32):
            if pid in children:
                return pid
            parent = _parent(pid)
            if parent is None or parent <= 1:
                return None
            pid = parent
        return None
