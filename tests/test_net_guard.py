"""The network guard (`evo/eval/net_guard.py`) against real processes and real sockets, on the CPU.

A TCP server and a UDP socket listen on 127.0.0.1 in the test process; a forked child (the way the GPU worker
starts a candidate) guards itself and then tries to reach them in every way a candidate could. The child
reports through a pipe; the server side confirms that nothing arrived. The guard cannot be lifted, so it is
never applied to the pytest process itself.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from evo.eval import fs_guard, net_guard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LL_ABI, _ = fs_guard.landlock_abi()
CLONE_NEWNET = 0x40000000


def in_child(body: Callable[[], dict], timeout: float = 60.0) -> dict:
    """Fork, run `body` in the child, return what it returned (as JSON through a pipe). The test process
    has no threads when it forks: the server's thread starts afterwards."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = body()
        except BaseException as exc:  # noqa: BLE001 - the test shows it
            out = {"crash": repr(exc)}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(write, data):]
        os._exit(0)
    os.close(write)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the guarded child did not answer within {timeout} s")
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks))
    assert "crash" not in out, out["crash"]
    return out


def attempt(results: dict, name: str, fn: Callable[[], object]) -> None:
    """Record "ok" or the errno's name (or the exception's type) of one try."""
    try:
        fn()
        results[name] = "ok"
    except OSError as exc:
        results[name] = errno.errorcode.get(exc.errno or 0, repr(exc))
    except Exception as exc:  # noqa: BLE001
        results[name] = type(exc).__name__


def unix_pair() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


@dataclass
class Host:
    """What listens on the host's loopback: a TCP server (a thread accepts) and a UDP socket."""

    tcp: socket.socket
    udp: socket.socket
    tcp_port: int  # kept here: in a guarded child the sockets above are /dev/null
    udp_port: int
    netns: int  # a descriptor of the host's network namespace, which a candidate could inherit
    accepted: list[bytes] = field(default_factory=list)
    sentinel_seen: threading.Event = field(default_factory=threading.Event)

    def start_accepting(self) -> threading.Thread:
        def serve() -> None:
            while not self.sentinel_seen.is_set():
                conn, _ = self.tcp.accept()
                with conn:
                    conn.settimeout(10)
                    first = conn.recv(64)
                self.accepted.append(first)
                if first == b"sentinel":
                    self.sentinel_seen.set()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        return thread

    def assert_nothing_arrived(self, thread: threading.Thread) -> None:
        """Connect a sentinel after the child is done: connections complete in the kernel's backlog in
        order, so if the child had reached the server, its connection would be accepted before it."""
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=10) as conn:
            conn.sendall(b"sentinel")
            assert self.sentinel_seen.wait(10)
        thread.join(10)
        assert self.accepted == [b"sentinel"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"sentinel", ("127.0.0.1", self.udp_port))
        self.udp.settimeout(10)
        assert self.udp.recvfrom(64)[0] == b"sentinel"  # the first datagram: the child's never came


@pytest.fixture
def host() -> Iterator[Host]:
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    yield Host(tcp, udp, tcp.getsockname()[1], udp.getsockname()[1], netns)
    os.close(netns)
    tcp.close()
    udp.close()


@pytest.fixture(scope="module")
def guard_here() -> dict:
    """What the guard achieves on this machine (in a throwaway child); skips where nothing holds."""
    status = in_child(lambda: net_guard.isolate_network().to_dict())
    if not status["active"]:
        pytest.skip(f"no network guard holds on this machine: {status['summary']}")
    return status


def try_everything(h: Host) -> dict:
    """Every way to the host's network a candidate could try, from the calling thread."""
    import builtins

    results: dict = {}
    tcp, udp = ("127.0.0.1", h.tcp_port), ("127.0.0.1", h.udp_port)
    attempt(results, "create_connection", lambda: socket.create_connection(tcp, timeout=5).sendall(b"child"))
    sock_mod = builtins.__import__("soc" + "ket")  # a computed import, as the attacking candidate did
    attempt(results, "computed_import", lambda: sock_mod.socket(2, 1).connect(tcp))
    raw = builtins.__import__("_soc" + "ket")
    attempt(results, "_socket", lambda: raw.socket(2, 1).connect(tcp))
    attempt(results, "udp_sendto", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"child", udp))
    attempt(results, "ipv6", lambda: socket.create_connection(("::1", h.tcp_port), timeout=5))

    def listen() -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen()

    attempt(results, "bind_listen", listen)
    attempt(results, "netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
    def accept_inherited() -> None:  # the parent's listening socket, inherited by fork
        h.tcp.setblocking(False)
        h.tcp.accept()

    attempt(results, "inherited_listener", accept_inherited)
    attempt(results, "unix_pair", unix_pair)

    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def setns(fd: int) -> None:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    attempt(results, "setns_host", lambda: setns(h.netns))  # a descriptor of the host's namespace, inherited
    attempt(results, "setns_pid1", lambda: setns(os.open("/proc/1/ns/net", os.O_RDONLY)))
    code = f"import socket; socket.create_connection(('127.0.0.1', {h.tcp_port}), timeout=5).sendall(b'exec')"
    if os.access(sys.executable, os.X_OK):  # a program it starts (the guard survives execve)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        results["exec"] = "ok" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]
    pid = os.fork()
    if pid == 0:  # a forked grandchild
        try:
            socket.create_connection(("127.0.0.1", h.tcp_port), timeout=5).sendall(b"fork")
            os._exit(0)
        except OSError as exc:
            os._exit(exc.errno or 1)
    results["fork"] = errno.errorcode.get(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "ok")
    results["check"] = net_guard.check(h.tcp_port).to_dict()
    return results


REFUSED = {"create_connection": "EACCES", "computed_import": "EACCES", "_socket": "EACCES",
           "udp_sendto": "EACCES", "ipv6": "EACCES", "bind_listen": "EACCES", "netlink": "EACCES",
           "inherited_listener": "ENOTSOCK", "unix_pair": "ok", "setns_host": "EPERM", "fork": "EACCES"}


def assert_refused(results: dict, **expected: str) -> None:
    check = results.pop("check")
    exec_result = results.pop("exec", "PermissionError (not run: the interpreter is out of reach)")
    setns_pid1 = results.pop("setns_pid1")
    assert results == {**REFUSED, **expected}
    assert setns_pid1 in ("EPERM", "EACCES")  # EACCES: Landlock's domain refuses to open another's ns
    assert "PermissionError" in exec_result
    assert check["ok"], check["detail"]
    assert "refused by the guard (EACCES)" in check["detail"]


def test_a_guarded_child_reaches_nothing_of_the_host(host: Host, guard_here: dict) -> None:
    def body() -> dict:
        status = net_guard.isolate_network()
        return {"status": status.to_dict(), "results": try_everything(host)}

    out = in_child(body)
    thread = host.start_accepting()
    status = out["status"]
    assert status["active"] and "seccomp" in status["layers"] and status["threads_left"] == 0
    assert status["mechanism"] == "+".join(status["layers"]) == guard_here["mechanism"]
    if os.geteuid() == 0 and "netns" in guard_here["layers"]:
        assert status["layers"][0] == "netns"
    # the two host sockets of the fixture, inherited by the fork, are gone from the child
    assert len(status["closed"]) >= 2 and all(c.endswith("(AF_INET)") for c in status["closed"])
    assert status["summary"].startswith(f"network isolation: {status['mechanism']} (")
    assert_refused(out["results"])
    host.assert_nothing_arrived(thread)


def test_threads_started_before_the_guard_are_covered(host: Host, guard_here: dict) -> None:
    """Like CUDA's helper threads: they exist before the guard, and they are in the host's namespace still
    (unshare moves the calling thread only); seccomp's TSYNC holds them all the same."""

    def body() -> dict:
        go = threading.Event()
        seen: dict = {}

        def helper(i: int) -> None:
            go.wait()
            attempt(seen, f"thread{i}_tcp", lambda: socket.create_connection(("127.0.0.1", host.tcp_port), 5))
            attempt(seen, f"thread{i}_udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                b"thread", ("127.0.0.1", host.udp_port)))

        threads = [threading.Thread(target=helper, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        status = net_guard.isolate_network()
        go.set()
        for thread in threads:
            thread.join()
        return {"status": status.to_dict(), "threads": seen, "results": try_everything(host)}

    out = in_child(body)
    thread = host.start_accepting()
    status = out["status"]
    assert status["active"] and status["threads"] >= 4 and status["threads_left"] == 0
    assert out["threads"] == {f"thread{i}_{p}": "EACCES" for i in range(3) for p in ("tcp", "udp")}
    assert_refused(out["results"])
    host.assert_nothing_arrived(thread)


def test_without_root_seccomp_holds_alone(host: Host, guard_here: dict) -> None:
    """A process without CAP_SYS_ADMIN gets no namespace (and multi-threaded, no user namespace either):
    seccomp (and Landlock for TCP) hold, and the status says the namespace was refused."""

    def body() -> dict:
        threading.Thread(target=lambda: None).start()  # multi-threaded, as after CUDA's start
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)  # drops every capability
        status = net_guard.isolate_network()
        return {"status": status.to_dict(), "results": try_everything(host)}

    out = in_child(body)
    thread = host.start_accepting()
    status = out["status"]
    assert status["active"] and status["layers"][0] == "seccomp" and "netns" not in status["layers"]
    assert ("landlock" in status["layers"]) == (LL_ABI >= 4)
    assert status["unavailable"][0].startswith("netns: unshare(CLONE_NEWNET) failed: EPERM")
    assert "not applied: netns" in status["summary"]
    assert_refused(out["results"])
    host.assert_nothing_arrived(thread)


def test_unix_sockets_can_be_refused_too(guard_here: dict) -> None:
    def body() -> dict:
        status = net_guard.isolate_network(allow_unix=False)
        results: dict = {}
        attempt(results, "unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        attempt(results, "unix_pair", unix_pair)
        attempt(results, "inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        return {"status": status.to_dict(), "results": results}

    out = in_child(body)
    assert out["status"]["active"]
    assert out["results"] == {"unix": "EACCES", "unix_pair": "ok", "inet": "EACCES"}


HOSTILE = {  # machine: (unshare, prctl, seccomp) syscall numbers, for a profile that refuses them
    "x86_64": (272, 157, 317),
    "aarch64": (97, 167, 277),
}


@pytest.mark.skipif(os.uname().machine not in HOSTILE, reason=f"no syscall table for {os.uname().machine}")
def test_unavailable_is_reported_not_raised() -> None:
    """Under a seccomp profile that refuses unshare, prctl, seccomp and Landlock (as some container runtimes
    do), nothing holds: the status says so with the kernel's reasons, and the self-check fails."""
    unshare, prctl, seccomp = HOSTILE[os.uname().machine]
    arch = net_guard._ARCHES[os.uname().machine][0]
    eperm = net_guard._RET_ERRNO | 1
    rows = net_guard._assemble([
        ("ld", 4), ("jeq", arch, None, "allow"), ("ld", 0),
        ("jeq", unshare, "deny", None), ("jeq", prctl, "deny", None), ("jeq", seccomp, "deny", None),
        ("jeq", 444, "deny", None),  # landlock_create_ruleset
        ("label", "allow"), ("ret", net_guard._RET_ALLOW),
        ("label", "deny"), ("ret", eperm),
    ])

    def body() -> dict:
        import ctypes

        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # no_new_privs, then the hostile profile
        error, _ = net_guard.install_seccomp(rows, tsync=False)
        assert not error, error
        status = net_guard.isolate_network()
        return {"status": status.to_dict(), "check": net_guard.check().to_dict()}

    out = in_child(body)
    status = out["status"]
    assert not status["active"] and status["mechanism"] == "none" and status["layers"] == []
    assert status["summary"].startswith("network isolation: unavailable (netns: unshare(CLONE_NEWNET) failed: "
                                        "EPERM")
    assert "prctl(PR_SET_NO_NEW_PRIVS) failed: EPERM" in status["reason"]
    assert not out["check"]["ok"] and "ECONNREFUSED" in out["check"]["detail"]


def test_the_check_fails_where_the_network_is_open() -> None:
    result = net_guard.check()  # this (unguarded) process: the host answers on its loopback
    assert not result.ok
    assert "the host's network is reachable" in result.detail


def test_the_filter_is_well_formed() -> None:
    for machine in ("x86_64", "aarch64"):
        rows = net_guard.seccomp_program(machine=machine)
        assert rows[-1][0] == 0x06 and all(0 <= jt < len(rows) and 0 <= jf < len(rows) for _, jt, jf, _ in rows)
    with pytest.raises(ValueError, match="not known here for riscv64"):
        net_guard.seccomp_program(machine="riscv64")


def test_the_module_stays_light() -> None:
    code = ("import sys; import evo.eval.net_guard; "
            "print(sorted(m for m in ('torch', 'numpy', 'triton') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
