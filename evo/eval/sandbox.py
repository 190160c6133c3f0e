"""Run an untrusted candidate program so that nothing it does can harm the engine.

Stdlib only: GPU workers that have nothing but torch/triton import this module.

Process layout of one call (``run_sandboxed``)::

    engine thread ──Popen──▶ H  supervisor: `python -I -S -c <helper>` in a new session; unshare()s
                              │  pid + mount + net namespaces (+ a user namespace when not root)
                              └─fork─▶ I  PID 1 of the new pid namespace: builds the mount view,
                                       │  enforces the deadline, reports the candidate's wait status
                                       └─fork─▶ C  the candidate: new session, rlimits, uid drop,
                                                   no_new_privs, chdir(workdir), execve(argv)

When I exits the kernel kills every process left in its pid namespace, so the whole tree dies,
including grandchildren that detached with setsid(). The helper code is the `_h_*` section of
this file, run in a fresh interpreter with `-I -S` so it starts in ~10 ms and never imports the
heavy modules the engine uses.

Protected, when ``isolation_report()`` says the mechanism is active:

- the engine process and the rest of the machine: the candidate sees only its own pid namespace
  (``os.kill(-1, ...)``, killing its parent, ``killpg(0, ...)`` reach only itself), and as root
  the candidate runs under a fresh unprivileged uid (no capabilities, ``no_new_privs``);
- the file system: the whole mount tree is read-only to the candidate except ``workdir`` and a
  private tmpfs on /tmp, /var/tmp and /dev/shm; the engine's $HOME is hidden behind an empty
  tmpfs; directories the dropped uid could not search (e.g. a 0700 /root holding the
  interpreter) are replaced by a tmpfs that shows only the interpreter, the venv, the repo and
  the PYTHONPATH/PATH entries, read-only;
- the file system again, by Landlock (``evo/eval/fs_guard.py``, applied in C before execve, inherited
  by everything the candidate starts): writes only beneath ``workdir``, the private tmpfs mounts and
  to a few device files (/dev/null, ..., GPU nodes), whatever the mount view or the uid would allow;
  it holds also without namespaces, and it keeps the candidate from signalling processes outside
  it (ABI >= 6). ``SandboxResult.fs_guard`` says whether it was active, or why not;
- the network: with ``network=False`` an empty net namespace (only its own loopback);
- resources: RLIMIT_DATA (memory), RLIMIT_FSIZE (each file, stdout/stderr included),
  RLIMIT_NPROC (fork bombs; counted per sandbox uid, or per user namespace when not root),
  RLIMIT_CORE=0, and a wall-clock deadline enforced both by I and by the engine;
- secrets: a scrubbed environment; with the pid namespace the engine's /proc entries are out of sight.

Not protected:

- memory the candidate keeps outside RLIMIT_DATA: shared memory and files on the tmpfs mounts
  (bounded by their size), the page cache; there is no memory cgroup;
- disk use inside ``workdir`` is bounded per file (RLIMIT_FSIZE), not in total;
- CPU time beyond the wall clock, GPU memory and other devices (ioctls on device nodes);
- reading world-readable files of the machine (the candidate may read the repo, /etc, ...).

Fallbacks: without namespaces (e.g. a container whose seccomp profile forbids unshare) the tree
is killed by uid (when root) or by walking /proc from a child subreaper, writes are stopped by
file permissions and Landlock (where the kernel has it), and the network is open. Without
namespaces *and* without root the candidate runs under the engine's own uid and could signal the
engine unless Landlock (ABI >= 6) scopes its signals: do not run untrusted code that way.
``isolation_report()`` tells which case holds.
"""

from __future__ import annotations

import ctypes
import functools
import marshal
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The helper runs a text copy of fs_guard's Landlock section; imported here for the names only.
from evo.eval.fs_guard import _ll_restrict, _ll_summary  # noqa: F401

_MB = 1 << 20
_TAIL_BYTES = 8192  # how much of stdout/stderr a result keeps
_GRACE_S = 3.0  # engine-side backstop beyond the deadline that I enforces itself
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Sandbox uids come from a high range that no distribution, container (subuid) or sssd
# mapping hands out; each concurrent sandbox gets its own, so RLIMIT_NPROC counts only it.
_UID_BASE = 2_100_000_000
_UID_SPAN = 1 << 24
FEATURES = (
    "pid_namespace",
    "mount_namespace",
    "net_namespace",
    "user_namespace",
    "uid_drop",
    "no_new_privs",
    "readonly_root",
    "private_tmp",
    "private_proc",
    "hidden_home",
    "loopback",
    "fs_guard",
)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one candidate run."""

    timeout_s: float = 30.0  # wall clock; on expiry the WHOLE process tree is killed
    memory_mb: int = 2048  # RLIMIT_DATA of the candidate (GPU-safe, unlike RLIMIT_AS)
    max_file_mb: int = 16  # RLIMIT_FSIZE: biggest file the candidate may write (stdout/stderr included)
    max_processes: int = 64  # fork-bomb bound (processes and threads)
    network: bool = False  # False: no network where the OS allows (empty net namespace)


@dataclass
class SandboxResult:
    """What happened to one candidate run."""

    status: str  # "ok" | "error" | "timeout" | "crashed" | "memory" | "output_limit"
    returncode: int | None  # exit code, None when killed by a signal
    signal: int | None  # the signal that killed the candidate, if any
    wall_s: float
    stdout_tail: str  # last few KB only, decoded with errors="replace"
    stderr_tail: str
    reason: str  # one human line
    fs_guard: str = ""  # the filesystem guard's summary line (evo/eval/fs_guard.py); "" if never reached


def run_sandboxed(
    argv: Sequence[str], workdir: Path, limits: Limits, env: Mapping[str, str] | None = None
) -> SandboxResult:
    """Run argv inside workdir under limits; never raises for anything the candidate does.

    As root, workdir and what it holds are first chowned to a fresh sandbox uid (the candidate's).
    """
    return _run(argv, workdir, limits, env)[0]


@functools.cache
def isolation_report() -> dict[str, bool]:
    """Which isolation mechanisms are active on this machine (probed once by a real run)."""
    with tempfile.TemporaryDirectory(prefix="evo-sandbox-probe-") as tmp:
        result, features = _run([sys.executable, "-I", "-S", "-c", "pass"], Path(tmp), Limits(), None)
    report = {name: name in features for name in FEATURES}
    report["candidate_runs"] = result.status == "ok"
    return report


# ----------------------------------------------------------------------------- engine side


def _run(
    argv: Sequence[str], workdir: Path, limits: Limits, env: Mapping[str, str] | None
) -> tuple[SandboxResult, set[str]]:
    """run_sandboxed, also returning the isolation features the helper reported."""
    if not argv:
        raise ValueError("argv is empty")
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"sandbox workdir {workdir} does not exist (the caller creates it)")
    workdir = workdir.resolve()
    child_env = _child_env(workdir, env)
    exe = _resolve_executable(argv[0], workdir, child_env["PATH"])
    uid = _allocate_uid() if os.geteuid() == 0 else None
    try:
        if uid is not None:
            _give_to(workdir, uid)
        # Unnamed files in workdir (O_TMPFILE): the candidate cannot swap them for symlinks, and
        # RLIMIT_FSIZE bounds them, so a candidate printing 1 GB costs only itself.
        with tempfile.TemporaryFile(dir=workdir) as out, tempfile.TemporaryFile(dir=workdir) as err:
            cfg = {
                "argv": [exe, *map(str, argv[1:])],
                "env": child_env,
                "workdir": str(workdir),
                "uid": uid,
                "outer_uid": os.getuid(),
                "outer_gid": os.getgid(),
                "network": limits.network,
                "max_processes": limits.max_processes,
                "rlimits": [
                    (resource.RLIMIT_DATA, limits.memory_mb * _MB),
                    (resource.RLIMIT_FSIZE, limits.max_file_mb * _MB),
                    (resource.RLIMIT_CORE, 0),
                ],
                "keep": _exposed_paths(exe, child_env),
                "hide": _engine_home(),
                "tmp_mb": max(64, 4 * limits.max_file_mb),
                "shm_mb": limits.memory_mb,
            }
            return _supervise(cfg, limits, out, err)
    finally:
        if uid is not None:
            _release_uid(uid)


def _supervise(cfg: dict, limits: Limits, out, err) -> tuple[SandboxResult, set[str]]:
    """Start the helper, wait for its report (with a backstop deadline), build the result."""
    read_fd, write_fd = os.pipe()
    try:
        cfg["status_fd"] = write_fd
        start = time.monotonic()
        cfg["deadline"] = start + limits.timeout_s
        try:
            proc = subprocess.Popen(
                [sys.executable or "python3", "-I", "-S", "-c", _helper_code()],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own group: killpg reaches H and I, never the engine
                cwd="/",
                env={"PATH": _DEFAULT_PATH, "LC_ALL": "C.UTF-8"},
            )
        finally:
            os.close(write_fd)
        try:
            try:
                proc.stdin.write(marshal.dumps(cfg))
                proc.stdin.close()
            except BrokenPipeError:  # the helper died at once; its stderr says why
                pass
            messages, backstop_fired = _collect_status(read_fd, proc, cfg["deadline"] + _GRACE_S)
        except BaseException:  # e.g. KeyboardInterrupt in the engine: leave nothing running
            _killpg(proc.pid)  # I is in H's group; its pid namespace dies with it
            proc.wait()
            raise
    finally:
        os.close(read_fd)
    try:
        proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        proc.wait()
    wall = time.monotonic() - start

    exit_fields = messages.get("exit", "").split()
    wait_status = int(exit_fields[0]) if exit_fields else None
    timed_out = backstop_fired or (len(exit_fields) > 1 and exit_fields[1] == "1")
    sizes = (os.fstat(out.fileno()).st_size, os.fstat(err.fileno()).st_size)
    stdout_tail, stderr_tail = _tail(out), _tail(err)
    status, returncode, sig, reason = _classify(wait_status, timed_out, limits, sizes, stderr_tail)
    guard = messages.get("fsguard", "")  # "1 <summary>" when active, "0 <summary>" when not
    result = SandboxResult(status, returncode, sig, wall, stdout_tail, stderr_tail, reason, guard[2:])
    features = set(messages.get("iso", "").split(",")) - {""}
    return result, features | ({"fs_guard"} if guard.startswith("1 ") else set())


def _collect_status(fd: int, proc: subprocess.Popen, deadline: float) -> tuple[dict[str, str], bool]:
    """Read the helper's status lines until EOF; past the deadline kill the tree ourselves."""
    data = b""
    killed = False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if killed:
                break
            _kill_tree(proc, _parse_status(data).get("pid"))
            killed, deadline = True, time.monotonic() + _GRACE_S
            continue
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:  # I and H have both closed it: I has exited
            break
        data += chunk
    return _parse_status(data), killed


def _parse_status(data: bytes) -> dict[str, str]:
    """Status lines are 'key value'; the last one of a key wins."""
    lines = (line.partition(" ") for line in data.decode("utf-8", "replace").splitlines())
    return {key: value for key, _, value in lines}


def _kill_tree(proc: subprocess.Popen, init_pid: str | None) -> None:
    """Engine-side backstop: kill I (its pid namespace dies with it) and H's process group."""
    if init_pid:
        try:
            os.kill(int(init_pid), signal.SIGKILL)
            return  # H reaps I once the namespace is empty, then exits by itself
        except (ProcessLookupError, PermissionError):
            pass
    _killpg(proc.pid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(f) -> str:
    """The last _TAIL_BYTES of an open file, decoded leniently."""
    size = os.fstat(f.fileno()).st_size
    data = os.pread(f.fileno(), min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    return data.decode("utf-8", errors="replace")


_OOM_MARKERS = ("memoryerror", "cannot allocate memory", "std::bad_alloc", "out of memory")


def _classify(
    wait_status: int | None, timed_out: bool, limits: Limits, sizes: tuple[int, int], stderr_tail: str
) -> tuple[str, int | None, int | None, str]:
    """(status, returncode, signal, reason) from how the candidate ended."""
    timeout_reason = f"timed out after {limits.timeout_s:g} s (process tree killed)"
    if wait_status is None or wait_status < 0:
        if timed_out:
            return "timeout", None, signal.SIGKILL, timeout_reason
        return "crashed", None, None, "the sandbox supervisor died before the candidate finished"
    code = os.waitstatus_to_exitcode(wait_status)
    returncode, sig = (code, None) if code >= 0 else (None, -code)
    last_lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()][-5:]
    failed = bool(returncode) or sig is not None
    if timed_out:
        return "timeout", returncode, sig, timeout_reason
    if (
        sig == signal.SIGXFSZ
        or max(sizes) >= limits.max_file_mb * _MB
        or (failed and any("File too large" in line for line in last_lines))
    ):
        return "output_limit", returncode, sig, f"output exceeded the file-size limit of {limits.max_file_mb} MB"
    if failed and any(marker in line.lower() for line in last_lines for marker in _OOM_MARKERS):
        return "memory", returncode, sig, f"exceeded memory limit of {limits.memory_mb} MB"
    if sig is not None:
        return "crashed", returncode, sig, f"killed by {_signal_name(sig)}"
    if returncode:
        detail = f": {last_lines[-1][:200]}" if last_lines else ""
        return "error", returncode, sig, f"exited with code {returncode}{detail}"
    return "ok", returncode, sig, "exited with code 0"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _child_env(workdir: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    """The candidate's whole environment: nothing of the engine's leaks but PATH."""
    child = {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    child.update({str(k): str(v) for k, v in (env or {}).items()})
    return child


def _resolve_executable(name: str, workdir: Path, path: str) -> str:
    """Absolute path of argv[0]: relative paths are relative to workdir, bare names use PATH."""
    if "/" in name:
        return str(Path(name) if os.path.isabs(name) else workdir / name)
    return shutil.which(name, path=path) or name


def _exposed_paths(exe: str, env: Mapping[str, str]) -> list[str]:
    """Paths the candidate must be able to read even where they lie in hidden directories."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths.append(str(Path(__file__).resolve().parents[2]))  # the repo holding `evo`
    for exe_path in (os.path.abspath(exe), os.path.realpath(exe)):
        bindir = os.path.dirname(exe_path)
        paths.append(os.path.dirname(bindir) if os.path.basename(bindir) == "bin" else bindir)
    for var in ("PYTHONPATH", "PATH"):
        paths += env.get(var, "").split(os.pathsep)
    found = {p for p in paths if p and os.path.isabs(p) and os.path.exists(p)}
    return sorted(found | {os.path.realpath(p) for p in found})


def _engine_home() -> list[str]:
    """The engine's home directory, hidden from the candidate (keys, tokens, caches)."""
    home = os.path.realpath(os.path.expanduser("~"))
    return [home] if home != "/" and os.path.isdir(home) else []


_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _allocate_uid() -> int:
    """A sandbox uid no other sandbox of this process uses; random, so other engines rarely collide."""
    with _uid_lock:
        while True:
            uid = _UID_BASE + int.from_bytes(os.urandom(4), "little") % _UID_SPAN
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _give_to(workdir: Path, uid: int) -> None:
    """Hand workdir and what the caller put in it to the sandbox uid (symlinks are not followed)."""
    try:
        os.chown(workdir, uid, uid)
        for root, dirs, files in os.walk(workdir):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, uid)
    except OSError:  # a file system without ownership: let the candidate write anyway
        os.chmod(workdir, 0o777)


@functools.cache
def _helper_code() -> str:
    """Source of the helper: the `_h_*` section of this file, the Landlock section of fs_guard.py (`_ll_*`)
    and the few imports they need."""
    text = Path(__file__).read_text()
    begin = text.index("\n# ---- helper: begin")  # at a line start: not these two literals
    end = text.index("\n# ---- helper: end")
    guard = Path(__file__).with_name("fs_guard.py").read_text()
    guard = guard[guard.index("\n# ---- landlock: begin") : guard.index("\n# ---- landlock: end")]
    return ("import ctypes, errno, marshal, os, resource, select, sys, time\n" + guard + text[begin:end]
            + "_h_main()\n")


# ---- helper: begin. Runs in H, I and C (see the module docstring); may use only the modules
# ctypes, marshal, os, resource, select, sys and time, so that it starts fast.

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
            handles[path] = (os.open(path, os.O_PATH | os.O_CLOEXEC), os.path.isdir(path))
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
        if writable:
            if not (hidden or readonly):
                continue
        elif not hidden or any(_h_under(path, b) for b in bound):
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


# ---- helper: end
