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
including grandchildren that detached with setsid(). H, I and C run the helper program
(`evo/eval/sandbox_helper.py`) in a fresh interpreter with `-I -S`, so that it starts in ~10 ms and
never imports the heavy modules the engine uses; this module is the engine's side.

Protected, when ``isolation_report()`` says the mechanism is active:

- the engine process and the rest of the machine: the candidate sees only its own pid namespace
  (``os.kill(-1, ...)``, killing its parent, ``killpg(0, ...)`` reach only itself), and as root
  the candidate runs under a fresh unprivileged uid (no capabilities, ``no_new_privs``);
- the file system: the whole mount tree is read-only to the candidate except ``workdir`` and a
  private tmpfs on /tmp, /var/tmp and /dev/shm; the engine's $HOME is hidden behind an empty
  tmpfs; directories the dropped uid could not search (e.g. a 0700 /root holding the
  interpreter) are replaced by a tmpfs that shows only the interpreter, the venv, the repo and
  the PYTHONPATH/PATH entries, read-only; a folder the caller names `readable` (the task's folder,
  which may lie under /tmp or a home) is shown read-only at its own path, and nothing beside it;
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
    # False: the program run makes the Landlock write guard itself (`fs_guard.restrict_writes`), after CUDA has
    # started: a ruleset made before CUDA's start makes its initialisation fail (error 304, seen on an H100).
    write_guard: bool = True


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
    argv: Sequence[str],
    workdir: Path,
    limits: Limits,
    env: Mapping[str, str] | None = None,
    readable: Sequence[Path] = (),
) -> SandboxResult:
    """Run argv inside workdir under limits; never raises for anything the candidate does.

    `readable`: folders the candidate must read at their own paths although they may lie where the sandbox
    hides everything (/tmp, the engine's home), e.g. the task's folder holding its `reference.py`. Each is
    shown read-only, and nothing beside it. As root, one that the sandbox uid could not read (a 0700 folder
    under pytest's tmp_path) is shown as a read-only copy at its own path. Without a mount namespace the
    folder is read where it lies, as far as the candidate's uid may.

    As root, workdir and what it holds are first chowned to a fresh sandbox uid (the candidate's).
    """
    return _run(argv, workdir, limits, env, readable)[0]


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
    argv: Sequence[str], workdir: Path, limits: Limits, env: Mapping[str, str] | None, readable: Sequence[Path] = ()
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
    staging: str | None = None
    try:
        if uid is not None:
            _give_to(workdir, uid)
        exposed, staging = _exposed_folders(readable, workdir, uid is not None)
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
                "write_guard": limits.write_guard,
                "max_processes": limits.max_processes,
                "rlimits": [
                    (resource.RLIMIT_DATA, limits.memory_mb * _MB),
                    (resource.RLIMIT_FSIZE, limits.max_file_mb * _MB),
                    (resource.RLIMIT_CORE, 0),
                ],
                "keep": _exposed_paths(exe, child_env),
                "expose": exposed,
                "hide": _engine_home(),
                "tmp_mb": max(64, 4 * limits.max_file_mb),
                "shm_mb": limits.memory_mb,
            }
            return _supervise(cfg, limits, out, err)
    finally:
        if uid is not None:
            _release_uid(uid)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


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


def _exposed_folders(readable: Sequence[Path], workdir: Path, dropped_uid: bool) -> tuple[list[tuple[str, str]], str | None]:
    """(path the candidate sees, folder bound there) for each readable folder, and the staging folder to remove.

    A bind mount keeps the owner and mode of what it shows, so a folder the sandbox uid may not read (0700, as
    pytest and `mkdtemp` make them) is copied first, world-readable, next to workdir (never inside it: the
    candidate could write there); the copy is bound read-only at the original path."""
    pairs: list[tuple[str, str]] = []
    staging: str | None = None
    for folder in readable:
        target = os.path.realpath(folder)
        if not os.path.isdir(target):
            raise FileNotFoundError(f"readable folder {folder} does not exist")
        source = target
        if dropped_uid and not _world_readable(target):
            if staging is None:
                staging = tempfile.mkdtemp(prefix="exposed-", dir=workdir.parent)
                os.chmod(staging, 0o755)
            source = os.path.join(staging, str(len(pairs)))
            shutil.copytree(target, source, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
            _open_to_all(source)
        pairs.append((target, source))
    return pairs, staging


def _world_readable(folder: str) -> bool:
    """Whether others may list and read everything in folder (what a dropped uid needs)."""
    for root, _dirs, files in os.walk(folder):
        if os.stat(root).st_mode & 0o005 != 0o005:
            return False
        for name in files:
            try:
                if os.stat(os.path.join(root, name)).st_mode & 0o004 == 0:
                    return False
            except OSError:  # a dangling link: nothing to read anyway
                continue
    return True


def _open_to_all(folder: str) -> None:
    """Make a staged copy readable (not writable) by the sandbox uid: directories 0755, files 0644 (or 0755)."""
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)


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


_HELPER = Path(__file__).with_name("sandbox_helper.py")
_FS_GUARD = Path(__file__).with_name("fs_guard.py")


@functools.cache
def _helper_code() -> str:
    """The helper program's text: sandbox_helper.py, the Landlock section of fs_guard.py (`_ll_*`; the helper
    cannot import `evo` under `-I -S`) and the call of `_h_main`. Passed with -c, so a test may define a
    function again before the call."""
    guard = _FS_GUARD.read_text()
    guard = guard[guard.index("\n# ---- landlock: begin") : guard.index("\n# ---- landlock: end")]
    return _HELPER.read_text() + "\nimport errno\n" + guard + "\n\n_h_main()\n"
