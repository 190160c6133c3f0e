"""Network guard for candidate processes: nothing of the network, the host's loopback included.

Stdlib only (ctypes, errno, os, socket): GPU workers that have nothing but torch/triton import this module.

``isolate_network()`` takes the network from the calling process, for good, in up to three layers, each
applied where the kernel allows it and reported in `NetGuardStatus`:

- ``netns``: ``unshare(CLONE_NEWNET)`` (needs CAP_SYS_ADMIN, i.e. root): the calling thread, the threads it
  starts later and every child move into an empty network namespace whose loopback is down. The host's
  127.0.0.1 (a vLLM server, notebooks, a Ray control plane), its interfaces and its abstract unix sockets
  are out of reach. ``unshare(2)`` moves the calling thread only: threads that already ran (CUDA's helpers)
  stay in the host's namespace. CLONE_NEWNET is allowed in a multi-threaded process; CLONE_NEWUSER, which
  a process without root would need for it, is not (EINVAL), and a CUDA child is always multi-threaded, so
  without root there is no namespace and the seccomp layer holds alone. A namespace alone is not counted
  as a guard: with CAP_SYS_ADMIN, ``setns()`` on ``/proc/1/ns/net`` (or on a CUDA thread's) leaves it.
- ``seccomp``: a filter on every thread of the process (``SECCOMP_FILTER_FLAG_TSYNC``), inherited by later
  threads and children, across ``execve``: ``socket()`` is refused with EACCES for every address family
  but AF_UNIX (AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK to a VM's host, ...; with
  ``allow_unix=False`` AF_UNIX too, ``socketpair`` excepted); ``setns()`` and ``pidfd_getfd()`` (taking a
  connected socket out of another process) with EPERM; io_uring, which creates and connects sockets without
  the ``socket`` syscall, with ENOSYS; and every syscall of another ABI (i386, x32) with EPERM. It needs
  ``no_new_privs``, which is set (as the filesystem guard does). This is the layer that makes the guard
  active: it holds without root and covers the threads that existed before.
- ``landlock``: a Landlock ruleset (ABI >= 4) that handles TCP bind and connect and allows no port, stacked
  on the filesystem guard's. It refuses TCP only (not UDP, raw or unix sockets), and before ABI 8 only on
  the calling thread and its later threads; it is a second wall for TCP behind seccomp.

Sockets inherited from the worker that are not AF_UNIX (a Ray worker's gRPC connections, a listening
socket) are replaced by /dev/null in this process (the parent keeps its own), since no layer above stops
reading or writing a socket that is already open. ``check()`` confirms the guard from inside: a TCP
connect and a UDP datagram to 127.0.0.1 must be refused by a guard (EACCES, or ENETUNREACH from the empty
namespace), not answered by the host (ECONNREFUSED, or a connection).

Not stopped:

- unix sockets bound to paths, e.g. ``/var/run/docker.sock``, a server's socket under ``/tmp`` or Ray's
  under ``/tmp/ray``: only the file permissions and the mount view govern connecting to them. The
  filesystem guard (Landlock up to ABI 7) stops creating socket files outside the allowed directories, not
  connecting to existing ones; ``allow_unix=False`` refuses new AF_UNIX sockets altogether (CUDA's driver
  connects to the MPS daemon through one when MPS runs, so call it after CUDA has started);
- abstract unix sockets of the host when there is no namespace (without root): the filesystem guard's
  scope (Landlock ABI >= 6, ``scope=True``) stops connecting to those created outside its domain;
- sockets received over a unix socket (SCM_RIGHTS) from a process outside, and other processes driven by
  ptrace or ``/proc/<pid>/mem`` (Landlock's domain stops both towards processes outside it);
- where seccomp is unavailable (no ``seccomp()``, a container profile that refuses it, an architecture other
  than x86_64 and aarch64) nothing counts as a guard: the status is inactive and says why. This module never
  raises for what the kernel lacks.

Where to call it: in the candidate's own process, after fork and after CUDA has started (its helper threads
are covered by TSYNC; the driver's own sockets are already open), before the candidate is imported, from
the thread that will run the candidate. Before or after the filesystem guard, in either order (Landlock
does not restrict unshare or seccomp; each sets ``no_new_privs``, which is harmless to set twice).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import asdict, dataclass

from evo.eval import fs_guard

_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP = 38, 22
_SECCOMP_MODE_FILTER = 2  # for prctl
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1  # for seccomp()
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_SYSCALL_BIT = 0x40000000

# BPF opcodes (linux/bpf_common.h) and the offsets of struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # args[0]'s low 32 bits on a little-endian machine

_ARCHES = {  # machine: (AUDIT_ARCH_*, syscall numbers)
    "x86_64": (0xC000003E, {"socket": 41, "socketpair": 53, "setns": 308, "seccomp": 317,
                            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                            "pidfd_getfd": 438}),
    "aarch64": (0xC00000B7, {"socket": 198, "socketpair": 199, "setns": 268, "seccomp": 277,
                             "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                             "pidfd_getfd": 438}),
}
_ARCHES["arm64"] = _ARCHES["aarch64"]

_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1 << 0, 1 << 1  # Landlock ABI 4


@dataclass(frozen=True)
class NetGuardStatus:
    """What `isolate_network` achieved."""

    active: bool  # seccomp holds: no thread of this process can open a socket of the network
    mechanism: str  # the layers that hold, joined by "+": "netns+seccomp+landlock", ..., "none"
    layers: tuple[str, ...]  # the same as a tuple
    threads: int  # threads of this process when the guard was applied
    threads_left: int  # of them, those no seccomp filter covers (0 with TSYNC)
    closed: tuple[str, ...]  # inherited sockets of the network replaced by /dev/null: "fd 7 (AF_INET)"
    unavailable: tuple[str, ...]  # layers that could not be applied, with the kernel's reason
    reason: str  # why the guard is not active; "" when it is
    unix: bool = True  # new AF_UNIX sockets allowed (False: refused too, socketpair excepted)

    @property
    def summary(self) -> str:
        """One line for a report: "network isolation: netns+seccomp (...)" or "...: unavailable (why)"."""
        if not self.active:
            return f"network isolation: unavailable ({self.reason})"
        parts = []
        if "netns" in self.layers:
            text = "an empty network namespace"
            if self.threads > 1:
                text += f" ({self.threads - 1} earlier thread(s) stay in the host's, held by seccomp)"
            parts.append(text)
        seccomp = ("seccomp: no sockets but AF_UNIX" if self.unix else "seccomp: no new sockets (socketpair excepted)") + \
            ", no setns, pidfd_getfd or io_uring"
        parts.append(seccomp + (f" ({self.threads_left} earlier thread(s) not covered)" if self.threads_left
                                else ", on every thread"))
        if "landlock" in self.layers:
            parts.append("landlock: no TCP bind or connect by this thread and later ones")
        if self.closed:
            parts.append(f"closed {len(self.closed)} inherited socket(s)")
        text = f"network isolation: {self.mechanism} ({'; '.join(parts)})"
        if self.unavailable:
            text += f"; not applied: {'; '.join(self.unavailable)}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "summary": self.summary}


@dataclass(frozen=True)
class NetCheck:
    """What `check` saw: ``ok`` only when every attempt was refused by a guard."""

    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def isolate_network(allow_unix: bool = True, close_inherited: bool = True, landlock_tcp: bool = True) -> NetGuardStatus:
    """Take the network from this process and everything it starts, for good; see the module doc.

    `landlock_tcp=False` leaves out the Landlock layer: any Landlock ruleset denies linking or renaming a file
    into another directory (LANDLOCK_ACCESS_FS_REFER is denied unless a rule grants it), so a process whose
    filesystem guard allows such renames in its own folders (Triton moves each compiled kernel from a temporary
    folder into its cache) must not stack one; seccomp and the namespace hold without it.

    Call it after fork and CUDA's start, before the candidate is imported. Never raises for what the
    kernel lacks: the status says what holds.
    """
    threads = _threads()
    closed = _close_inherited_sockets() if close_inherited else []
    layers: list[str] = []
    unavailable: list[str] = []
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
    except OSError as exc:
        why = f"no C library to call the kernel through: {exc}"
        return NetGuardStatus(False, "none", (), threads, threads, tuple(closed), (why,), why)

    if libc.unshare(ctypes.c_int(_CLONE_NEWNET)) == 0:
        layers.append("netns")
    else:
        unavailable.append(_err("netns: unshare(CLONE_NEWNET)"))

    threads_left = threads
    if libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        unavailable.append(_err("seccomp and landlock: prctl(PR_SET_NO_NEW_PRIVS)"))
    else:
        error, threads_left = _install_seccomp(allow_unix, threads)
        if error:
            unavailable.append(f"seccomp: {error}")
        else:
            layers.append("seccomp")
        error = _landlock_net(libc) if landlock_tcp else "left out by the caller (it would deny renames across folders)"
        if error:
            unavailable.append(f"landlock: {error}")
        else:
            layers.append("landlock")

    active = "seccomp" in layers
    reason = ""
    if not active:
        reason = "; ".join(unavailable)
        if "netns" in layers:
            reason += "; a network namespace alone can be left by setns() with the CAP_SYS_ADMIN it took"
        if "landlock" in layers:
            reason += "; Landlock alone stops TCP only"
    return NetGuardStatus(active=active, mechanism="+".join(layers) or "none", layers=tuple(layers),
                          threads=threads, threads_left=threads_left if active else threads,
                          closed=tuple(closed), unavailable=tuple(unavailable), reason=reason, unix=allow_unix)


def check(port: int | None = None, host: str = "127.0.0.1", timeout: float = 2.0) -> NetCheck:
    """Confirm the guard from inside the guarded process: a TCP connect and a UDP datagram to `host`:`port`
    (default port 1, closed almost everywhere) must be refused by a guard: EACCES/EPERM (seccomp at
    ``socket()``, Landlock at ``connect()``) or ENETUNREACH (the empty namespace). An answer from the host
    (ECONNREFUSED, a connection, a datagram sent) or anything else fails the check: a check that cannot be
    made counts as failed."""
    port = 1 if port is None else port
    tcp_ok, tcp = _probe(socket.SOCK_STREAM, host, port, timeout)
    udp_ok, udp = _probe(socket.SOCK_DGRAM, host, port, timeout)
    return NetCheck(ok=tcp_ok and udp_ok, detail=f"tcp {host}:{port}: {tcp}; udp {host}:{port}: {udp}")


def _probe(kind: int, host: str, port: int, timeout: float) -> tuple[bool, str]:
    name = "socket(AF_INET, SOCK_STREAM)" if kind == socket.SOCK_STREAM else "socket(AF_INET, SOCK_DGRAM)"
    try:
        sock = socket.socket(socket.AF_INET, kind)
    except OSError as exc:
        return _judge(exc, name)
    with sock:
        sock.settimeout(timeout)
        try:
            if kind == socket.SOCK_STREAM:
                sock.connect((host, port))
                return False, "connected: the host's network is reachable"
            sock.sendto(b"evo net_guard check", (host, port))
            return False, "a datagram was sent: the host's network is reachable"
        except OSError as exc:
            return _judge(exc, "connect" if kind == socket.SOCK_STREAM else "sendto")


def _judge(exc: OSError, what: str) -> tuple[bool, str]:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return True, f"{what} refused by the guard ({code})"
    if exc.errno == errno.ENETUNREACH:
        return True, f"{what} found no network ({code}: the empty namespace)"
    if exc.errno == errno.ECONNREFUSED:
        return False, f"{what} answered by the host ({code}): the host's network is reachable"
    return False, f"{what} failed in a way no guard causes, so the guard is not confirmed: {exc!r}"


def _err(what: str) -> str:
    err = ctypes.get_errno()
    return f"{what} failed: {errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _close_inherited_sockets() -> list[str]:
    """Replace every open socket that is not AF_UNIX by /dev/null (the number stays taken, so that nothing
    that still holds it writes into a file opened later); returns "fd N (FAMILY)" for each."""
    closed = []
    try:
        fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        return closed
    null = None
    try:
        for fd in fds:
            try:
                if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    continue
                probe = socket.socket(fileno=fd)
                family = probe.family
                probe.detach()
            except OSError:
                continue
            if family == socket.AF_UNIX:
                continue
            if null is None:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            os.dup2(null, fd, inheritable=os.get_inheritable(fd))
            closed.append(f"fd {fd} ({getattr(family, 'name', family)})")
    finally:
        if null is not None:
            os.close(null)
    return closed


def seccomp_program(allow_unix: bool = True, machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The BPF filter as (code, jt, jf, k) rows, for this machine's architecture (ValueError elsewhere)."""
    machine = machine or os.uname().machine
    if machine not in _ARCHES:
        raise ValueError(f"seccomp syscall numbers are not known here for {machine}")
    arch, nr = _ARCHES[machine]
    eperm, eacces, enosys = (_RET_ERRNO | e for e in (errno.EPERM, errno.EACCES, errno.ENOSYS))
    prog: list[tuple] = [
        ("ld", _OFF_ARCH), ("jeq", arch, None, "eperm"),
        ("ld", _OFF_NR),
    ]
    if machine == "x86_64":
        prog.append(("jge", _X32_SYSCALL_BIT, "eperm", None))
    prog += [
        ("jeq", nr["socket"], "socket", None),
        ("jeq", nr["socketpair"], "socketpair", None),
        ("jeq", nr["setns"], "eperm", None),
        ("jeq", nr["pidfd_getfd"], "eperm", None),
        ("jeq", nr["io_uring_setup"], "enosys", None),
        ("jeq", nr["io_uring_enter"], "enosys", None),
        ("jeq", nr["io_uring_register"], "enosys", None),
        ("ret", _RET_ALLOW),
        ("label", "socket"), ("ld", _OFF_ARG0), ("jeq", socket.AF_UNIX, "unix", "eacces"),
        ("label", "unix"), ("ret", _RET_ALLOW if allow_unix else eacces),
        ("label", "socketpair"), ("ld", _OFF_ARG0), ("jeq", socket.AF_UNIX, "allow", "eacces"),
        ("label", "allow"), ("ret", _RET_ALLOW),
        ("label", "eacces"), ("ret", eacces),
        ("label", "eperm"), ("ret", eperm),
        ("label", "enosys"), ("ret", enosys),
    ]
    return _assemble(prog)


def _assemble(prog: list[tuple]) -> list[tuple[int, int, int, int]]:
    """Resolve the labels of a tiny BPF assembly: ("ld", offset), ("jeq"|"jge", k, true, false) where a
    target of None is the next row, ("ret", k), ("label", name)."""
    where: dict[str, int] = {}
    rows: list[tuple] = []
    for item in prog:
        if item[0] == "label":
            where[item[1]] = len(rows)
        else:
            rows.append(item)
    out = []
    for i, row in enumerate(rows):
        if row[0] == "ld":
            out.append((_LD_W_ABS, 0, 0, row[1]))
        elif row[0] == "ret":
            out.append((_RET_K, 0, 0, row[1]))
        else:
            jumps = [0 if t is None else where[t] - i - 1 for t in row[2:]]
            if not all(0 <= j <= 255 for j in jumps):
                raise ValueError(f"BPF jump out of range at row {i}: {row}")
            out.append((_JEQ_K if row[0] == "jeq" else _JGE_K, jumps[0], jumps[1], row[1]))
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install_seccomp(rows: list[tuple[int, int, int, int]], tsync: bool = True) -> tuple[str, int]:
    """Install a BPF filter on this process (every thread with `tsync`, else the calling thread only).
    Returns ("", 0) on success, else (the reason, errno). The caller must have set no_new_privs (or hold
    CAP_SYS_ADMIN). Where the seccomp() syscall is missing (before Linux 3.17) and `tsync` is off, prctl."""
    machine = os.uname().machine
    if machine not in _ARCHES:
        return f"seccomp syscall numbers are not known here for {machine}", errno.ENOSYS
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    filters = (_SockFilter * len(rows))(*(_SockFilter(*row) for row in rows))
    fprog = _SockFprog(len(rows), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    flags = _SECCOMP_FILTER_FLAG_TSYNC if tsync else 0
    got = libc.syscall(ctypes.c_long(_ARCHES[machine][1]["seccomp"]), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                       ctypes.c_uint(flags), ctypes.byref(fprog))
    if got == 0:
        return "", 0
    if got > 0:
        return f"seccomp(TSYNC) could not synchronise thread {got} (it has a filter of another tree)", 0
    err = ctypes.get_errno()
    error = _err("seccomp(SECCOMP_SET_MODE_FILTER" + (", TSYNC)" if tsync else ")"))
    if err == errno.ENOSYS and not tsync:
        if libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0:
            return "", 0
        err, error = ctypes.get_errno(), _err("prctl(PR_SET_SECCOMP)")
    return error, err


def _install_seccomp(allow_unix: bool, threads: int) -> tuple[str, int]:
    """Our filter on every thread; where seccomp() lacks TSYNC or is missing, on the calling thread only.
    Returns (error or "", threads of before left without the filter)."""
    try:
        rows = seccomp_program(allow_unix)
    except ValueError as exc:
        return str(exc), threads
    error, err = install_seccomp(rows, tsync=True)
    if not error:
        return "", 0
    if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a kernel without TSYNC (before 3.17 there is none)
        return error, threads
    error, _ = install_seccomp(rows, tsync=False)
    return error, threads if error else threads - 1


def _landlock_net(libc) -> str:
    """A Landlock ruleset that handles TCP bind and connect and allows no port; "" or the reason."""
    abi, why = fs_guard.landlock_abi()
    if abi < 4:
        return why or f"Landlock ABI {abi} has no network rules (4 needed)"
    attr = (ctypes.c_uint64 * 2)(0, _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP)  # handled_access_fs, _net
    ruleset = libc.syscall(ctypes.c_long(fs_guard._LL_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(16),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return _err("landlock_create_ruleset")
    try:
        flags = fs_guard._LL_RESTRICT_SELF_TSYNC if abi >= 8 else 0
        if libc.syscall(ctypes.c_long(fs_guard._LL_RESTRICT_SELF), ctypes.c_int(ruleset),
                        ctypes.c_uint32(flags)) != 0:
            return _err("landlock_restrict_self")
    finally:
        os.close(int(ruleset))
    return ""
