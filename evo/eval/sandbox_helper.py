"""The sandbox's helper program: the supervisor H, PID 1 of the new pid namespace (I) and the candidate (C).

See `evo/eval/sandbox.py` for the process layout and what is protected. The engine never imports this
file: `sandbox._helper_code()` reads it, adds the Landlock section of `evo/eval/fs_guard.py` and a call of
`_h_main()`, and runs the whole as `python -I -S -c <code>`. Stdlib only, and only ctypes, marshal, os,
resource, select, sys and time (errno for the Landlock section), so that it starts in ~10 ms and none of
the engine's heavy modules can load; `-I -S` keeps the user's site-packages and environment out.

It reads its config (a marshal'd dict, see `sandbox._run`) on stdin and writes status lines
("pid N", "iso a,b", "fsguard 1 <summary>", "exit <wait status> <timed out>") to cfg["status_fd"].
"""

import ctypes
import marshal
import os
import resource
import select
import sys
import time

# Never true when run: the engine puts fs_guard's Landlock section (`_ll_*`) into the program text, because
# `evo` itself is not importable under `-I -S`. The import tells readers and linters where the names live.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from evo.eval.fs_guard import _ll_restrict, _ll_summary

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_ATTR_RDONLY = 1
_SYS_MOUNT_SETATTR = 442  # the same number on every Linux architecture
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
_SIGKILL, _SIGPIPE, _SIGXFSZ = 9, 13, 25


def _h_main() -> None:
    """H: read the config, unshare namespaces, fork I, report its pid, wait for it."""
    cfg = marshal.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.umask(0o022)
    status = cfg["status_fd"]
    os.set_inheritable(status, False)  # the candidate's execve closes it
    libc = _h_libc()
    _h_prctl(libc, _PR_SET_PDEATHSIG, _SIGKILL)  # the engine dies: so do we
    features = _h_unshare(libc, cfg)
    _h_prctl(libc, _PR_SET_DUMPABLE, 0)  # after the uid map is written: nothing of our uid may ptrace us
    pid = os.fork()
    if pid == 0:
        try:
            _h_init(libc, cfg, features)
        except BaseException:  # a bug of ours: say so on the candidate's stderr
            sys.excepthook(*sys.exc_info())
        os._exit(70)
    os.write(status, b"pid %d\n" % pid)
    os.close(status)
    os.waitpid(pid, 0)  # returns once I is dead and its pid namespace is empty
    os._exit(0)


def _h_libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _h_prctl(libc, option: int, value: int) -> bool:
    return libc is not None and libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0


def _h_write(path: str, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def _h_unshare(libc, cfg: dict) -> list[str]:
    """New mount, pid (effective for children) and net namespaces; as non-root inside a user ns."""
    if libc is None:
        return []
    root = os.geteuid() == 0
    base = _CLONE_NEWNS | _CLONE_NEWPID | (0 if root else _CLONE_NEWUSER)
    attempts = [base] if cfg["network"] else [base | _CLONE_NEWNET, base]
    for flags in attempts:
        if libc.unshare(ctypes.c_int(flags)) == 0:
            break
    else:
        return []
    features = ["mount_namespace"]
    if flags & _CLONE_NEWNET:
        features.append("net_namespace")
    if not root:
        features.append("user_namespace")
        _h_write("/proc/self/setgroups", "deny")
        _h_write("/proc/self/uid_map", f"0 {cfg['outer_uid']} 1")
        _h_write("/proc/self/gid_map", f"0 {cfg['outer_gid']} 1")
    return features


def _h_init(libc, cfg: dict, features: list[str]) -> None:
    """I: build the candidate's world, run it, enforce the deadline, report its wait status."""
    _h_prctl(libc, _PR_SET_PDEATHSIG, _SIGKILL)
    in_pidns = os.getpid() == 1
    if in_pidns:
        features.append("pid_namespace")
    else:  # orphans of the candidate become our children, so that we can kill them
        _h_prctl(libc, _PR_SET_CHILD_SUBREAPER, 1)
    if "mount_namespace" in features:
        features += _h_mounts(libc, cfg, in_pidns)
    if "net_namespace" in features and _h_loopback_up(libc):
        features.append("loopback")
    if _h_prctl(libc, _PR_SET_NO_NEW_PRIVS, 1):  # inherited: no setuid binary can regain root
        features.append("no_new_privs")
    if cfg["uid"] is not None:
        features.append("uid_drop")
    status = cfg["status_fd"]
    os.write(status, ("iso " + ",".join(features) + "\n").encode())
    child = os.fork()
    if child == 0:
        _h_candidate(libc, cfg, features)
    wait_status, timed_out = _h_supervise(child, cfg["deadline"], in_pidns, cfg["uid"])
    os.write(status, b"exit %d %d\n" % (wait_status, timed_out))
    if not in_pidns:
        _h_kill_rest(cfg["uid"], child)
    os._exit(0)  # as PID 1, our exit kills everything left in the namespace


def _h_candidate(libc, cfg: dict, features: list[str]) -> None:
    """C: become the candidate (never returns)."""
    try:
        os.setsid()  # its own session: its killpg(0) cannot reach I or H
        for sig in (_SIGPIPE, _SIGXFSZ):  # Python ignores them, and exec would keep that
            if libc is not None:
                libc.signal(sig, ctypes.c_void_p(0))
        nproc = cfg["max_processes"]
        if cfg["uid"] is None and "user_namespace" not in features:
            nproc += _h_count_tasks(os.getuid())  # the count is shared with the engine's user
        for res, value in [*cfg["rlimits"], (resource.RLIMIT_NPROC, nproc)]:
            hard = resource.getrlimit(res)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(res, (value, value))
        os.chdir(cfg["workdir"])  # before the uid drop: works even below a directory it cannot search
        if cfg["uid"] is not None:
            _h_fs_guard(cfg)  # as root, before the drop: every allowed directory can be opened
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        else:
            if "user_namespace" in features:
                _h_drop_userns_root(libc, cfg)
            _h_fs_guard(cfg)  # after the uid maps are written: the guard refuses writes to /proc/self
    except (OSError, ValueError) as exc:
        _h_die(f"sandbox setup failed: {exc}", 126)
    argv = cfg["argv"]
    try:
        os.execve(argv[0], argv, cfg["env"])
    except OSError as exc:
        hint = ""
        if exc.errno == 13 and cfg["uid"] is not None:  # EACCES
            hint = " (the sandbox uid cannot reach it: make its directories world-searchable)"
        _h_die(f"cannot execute {argv[0]}: {exc.strerror}{hint}", 127)


def _h_fs_guard(cfg: dict) -> None:
    """Landlock (fs_guard.py): writes only beneath workdir and the private tmpfs mounts, whatever the mount
    view and the uid would allow; it also holds without namespaces, and survives execve. Its status line
    goes to the engine (SandboxResult.fs_guard)."""
    if not cfg.get("write_guard", True):  # the program makes it itself, after CUDA's start (Limits.write_guard)
        os.write(cfg["status_fd"], b"fsguard 0 filesystem isolation: left to the program run\n")
        return
    guard = _ll_restrict([cfg["workdir"], *cfg.get("private_dirs", [])], True, True)
    os.write(cfg["status_fd"], f"fsguard {int(guard['abi'] > 0)} {_ll_summary(guard)}\n".encode())


def _h_drop_userns_root(libc, cfg: dict) -> None:
    """Leave root of our user ns for a nested one where we are the engine's uid: no capabilities
    over the mounts I made (they are locked), and execve grants none."""
    _h_prctl(libc, _PR_SET_DUMPABLE, 1)  # else /proc/self/uid_map is not ours to write
    if libc.unshare(ctypes.c_int(_CLONE_NEWUSER)) != 0:
        raise OSError(ctypes.get_errno(), "cannot create the candidate's user namespace")
    ok = _h_write("/proc/self/setgroups", "deny")
    ok &= _h_write("/proc/self/uid_map", f"{cfg['outer_uid']} 0 1")
    ok &= _h_write("/proc/self/gid_map", f"{cfg['outer_gid']} 0 1")
    if not ok:
        raise OSError("cannot map the candidate's uid")


def _h_die(message: str, code: int) -> None:
    os.write(2, f"sandbox: {message}\n".encode())
    os._exit(code)


def _h_supervise(child: int, deadline: float, in_pidns: bool, uid: int | None) -> tuple[int, int]:
    """Wait for the candidate until the deadline, reaping orphans; returns (wait status, timed out)."""
    try:
        pidfd = os.pidfd_open(child)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        poller = None
    while True:
        wait_status = _h_reap(child)
        if wait_status is not None:
            return wait_status, 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if poller is not None:  # wakes at once when the candidate exits; the slices reap orphans
            poller.poll(min(remaining, 0.25) * 1000)
        else:
            time.sleep(min(remaining, 0.01))
    if not in_pidns:
        return _h_kill_rest(uid, child), 1
    try:
        os.kill(-1, _SIGKILL)  # from PID 1: every other process of the namespace
    except ProcessLookupError:
        pass
    return os.waitpid(child, 0)[1], 1


def _h_reap(child: int) -> int | None:
    """Reap every dead child; the candidate's wait status if it was among them."""
    found = None
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = wait_status


def _h_kill_rest(uid: int | None, child: int) -> int:
    """Without a pid namespace: kill every process the candidate left behind and reap them all;
    returns the candidate's wait status if it was reaped here."""
    found = None
    for _ in range(1000):
        if uid is not None:
            killer = os.fork()
            if killer == 0:  # as the sandbox uid, kill(-1) reaches exactly the sandbox's processes
                os.setuid(uid)
                for _ in range(3):
                    try:
                        os.kill(-1, _SIGKILL)
                    except ProcessLookupError:
                        break
                os._exit(0)
            os.waitpid(killer, 0)
        for pid in _h_descendants(os.getpid()):
            try:
                os.kill(pid, _SIGKILL)
            except OSError:
                pass
        wait_status = _h_reap(child)
        found = found if wait_status is None else wait_status
        if not _h_descendants(os.getpid()):
            break
        time.sleep(0.005)
    return -1 if found is None else found


def _h_descendants(pid: int) -> list[int]:
    """All descendants of pid, from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _h_count_tasks(uid: int) -> int:
    """Tasks (threads included) of uid on the machine, as RLIMIT_NPROC counts them."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return count


def _h_mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    return libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def _h_setattr(libc, path: str, attr_set: int, attr_clr: int, recursive: bool) -> bool:
    """mount_setattr(2): change per-mount flags (recursively) without touching the others."""
    attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, 0, 0)
    flags = _AT_RECURSIVE if recursive else 0
    return (
        libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(_AT_FDCWD),
            os.fsencode(path),
            ctypes.c_uint(flags),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        == 0
    )


def _h_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _h_depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _h_blocker(path: str) -> str | None:
    """The highest ancestor of path that others may not search (a dropped uid could not pass)."""
    current = ""
    for part in path.strip("/").split("/")[:-1]:
        current += "/" + part
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def _h_mounts(libc, cfg: dict, in_pidns: bool) -> list[str]:
    """Build the candidate's view of the file system; returns the features achieved."""
    if not _h_mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE):
        return []  # our mounts would leak to the host: make none
    workdir = cfg["workdir"]
    keep = {p: False for p in cfg["keep"]}
    # Folders shown read-only at their own path, from a source that may differ (a world-readable copy).
    sources = {target: source for target, source in cfg.get("expose", [])}
    keep.update({target: False for target in sources})
    keep[workdir] = True  # path -> writable
    tmp_opts = f"size={cfg['tmp_mb']}m,mode=1777"
    covers = {p: tmp_opts for p in ("/tmp", "/var/tmp") if os.path.isdir(p)}
    if os.path.isdir("/dev/shm"):
        covers["/dev/shm"] = f"size={cfg['shm_mb']}m,mode=1777"
    for home in cfg["hide"]:
        covers[home] = "size=1m,mode=755"
    if cfg["uid"] is not None:
        for path in keep:
            blocker = _h_blocker(path)
            if blocker:
                covers.setdefault(blocker, "size=1m,mode=755")
    # Open what we keep before anything covers it: binds are made from these handles.
    handles = {}
    for path in keep:
        try:
            source = sources.get(path, path)
            handles[path] = (os.open(source, os.O_PATH | os.O_CLOEXEC), os.path.isdir(source))
        except OSError:
            pass

    features = []
    readonly = _h_setattr(libc, "/", _MOUNT_ATTR_RDONLY, 0, True)
    if readonly:
        features.append("readonly_root")
    if in_pidns and _h_mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC):
        features.append("private_proc")  # shows only the namespace's processes
    covered: list[str] = []
    for path in sorted(covers, key=_h_depth):
        if any(_h_under(path, c) for c in covered):
            continue
        if _h_mount(libc, "tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, covers[path]):
            covered.append(path)
    if "/tmp" in covered:
        features.append("private_tmp")
    cfg["private_dirs"] = [p for p in ("/tmp", "/var/tmp", "/dev/shm") if p in covered]  # the candidate's own
    if any(_h_under(home, c) for home in cfg["hide"] for c in covered):
        features.append("hidden_home")

    bound: list[str] = []
    for path in sorted(handles, key=_h_depth):
        writable = keep[path]
        hidden = any(_h_under(path, c) for c in covered)
        swapped = sources.get(path, path) != path  # a copy stands in for it: bind even where it is visible
        if writable:
            if not (hidden or readonly):
                continue
        elif not (hidden or swapped) or (not swapped and any(_h_under(path, b) for b in bound)):
            continue
        fd, is_dir = handles[path]
        try:
            if hidden:
                _h_mkpath(path, is_dir)
            if not _h_mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC):
                continue
        except OSError:
            continue
        bound.append(path)
        if writable and readonly:
            _h_setattr(libc, path, 0, _MOUNT_ATTR_RDONLY, False)
        elif path in sources:  # a copy in the scratch folder, which is writable on the host: read-only here
            _h_setattr(libc, path, _MOUNT_ATTR_RDONLY, 0, True)
    for fd, _ in handles.values():
        os.close(fd)
    return features


def _h_mkpath(path: str, is_dir: bool) -> None:
    """Create a mount point for path inside a covering tmpfs."""
    if is_dir:
        os.makedirs(path, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _h_loopback_up(libc) -> bool:
    """Bring up lo in the new net namespace: the candidate may talk to itself, to nobody else."""
    fd = libc.socket(2, 2, 0)  # AF_INET, SOCK_DGRAM
    if fd < 0:
        return False
    try:
        ifreq = ctypes.create_string_buffer(40)
        ifreq[0:2] = b"lo"
        if libc.ioctl(fd, ctypes.c_ulong(0x8913), ifreq) != 0:  # SIOCGIFFLAGS
            return False
        flags = int.from_bytes(ifreq[16:18], "little") | 1  # IFF_UP
        ifreq[16:18] = flags.to_bytes(2, "little")
        return libc.ioctl(fd, ctypes.c_ulong(0x8914), ifreq) == 0  # SIOCSIFFLAGS
    finally:
        os.close(fd)
