"""Filesystem guard for candidate processes: Landlock, so that a candidate writes only where it is allowed to.

Stdlib only (ctypes, errno, os): GPU workers that have nothing but torch/triton import this module, and the
sandbox's helper (`evo/eval/sandbox.py`) runs the `landlock` section below as text.

``restrict_writes(dirs)`` restricts the calling process and every process it starts afterwards (threads,
children, grandchildren, across ``execve``; the restriction cannot be lifted). It handles every write-type
access right of the kernel's Landlock ABI and allows them only beneath ``dirs``:

- write to a file, truncate it (ABI >= 3), remove a file or directory, make a regular file, directory,
  symlink, socket, fifo, character or block device, and link or rename across directories (*refer*,
  ABI >= 2: with ABI 1 such moves are refused everywhere, also inside ``dirs``);
- with ``devices=True`` writes to the device files a GPU program needs are allowed as well (file writes
  only, never creating or removing): ``/dev/null``, ``zero``, ``full``, ``random``, ``urandom``, ``tty``,
  every ``/dev/nvidia*`` (``nvidia0``, ``nvidiactl``, ``nvidia-uvm``, ``nvidia-caps/``, ...), ``/dev/dri/``
  and ``/dev/kfd``. Not the whole of /dev: a process running as root could otherwise write raw disks
  (block devices), ``/dev/mem`` or ``/dev/watchdog``, and files other processes share in ``/dev/shm``;
- reads, execution and ioctls are not restricted (torch and Triton import and run from anywhere);
- with ABI >= 6 and ``scope=True`` the process may not signal processes outside its domain (the worker's
  zygote, the engine) nor connect to abstract unix sockets created outside it.

Landlock before ABI 8 restricts the calling thread only (new threads inherit it); threads that existed
before the call (CUDA's helper threads in a kernel worker's child) keep full access. ABI 8 restricts
every thread of the process at once (``LANDLOCK_RESTRICT_SELF_TSYNC``). ``GuardStatus.threads_left`` says
how many threads were left out.

Where Landlock is missing (a kernel before 5.13, Landlock disabled at boot, a seccomp profile that refuses
the calls, another architecture) nothing is restricted and the status says why, so that the harness can
report "filesystem isolation: unavailable"; this module never raises for that.

Landlock ABI facts used here: the kernel's userspace-api documentation (Documentation/userspace-api/
landlock.rst) and the landlock(7), landlock_create_ruleset(2), landlock_add_rule(2) and
landlock_restrict_self(2) manual pages.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class GuardStatus:
    """What `restrict_writes` achieved."""

    active: bool
    abi: int  # the kernel's Landlock ABI version, 0 when there is none
    writable: tuple[str, ...]  # the directories writes are allowed beneath (those that existed)
    devices: int  # device files (or directories of them) that may be written
    scoped: tuple[str, ...]  # "signal", "abstract_unix_socket" (ABI >= 6)
    threads_left: int  # threads of this process that existed before and stay unrestricted (ABI < 8)
    reason: str  # why the guard is not active; "" when it is

    @property
    def summary(self) -> str:
        """One line for a report: "filesystem isolation: landlock ABI 7, ..." or "...: unavailable (why)"."""
        return _ll_summary({**asdict(self), "abi": self.abi if self.active else 0, "error": self.reason})

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "summary": self.summary}


def landlock_abi() -> tuple[int, str]:
    """(ABI version, "") when Landlock is usable here, else (0, why not)."""
    try:
        libc = _ll_libc()
    except OSError as exc:
        return 0, f"no C library to call Landlock through: {exc}"
    return _ll_abi(libc)


def restrict_writes(writable: Iterable[str | os.PathLike[str]], devices: bool = True,
                    scope: bool = True) -> GuardStatus:
    """Allow writes only beneath `writable` (and to GPU/standard device files), for good; see the module doc.

    Directories that do not exist are left out (nothing beneath them can be written). Never raises for
    what the kernel lacks: the status says whether the guard is active.
    """
    paths = [os.path.abspath(os.fspath(p)) for p in writable]
    raw = _ll_restrict(paths, devices, scope)
    return GuardStatus(active=raw["abi"] > 0, abi=raw["abi"], writable=tuple(raw["writable"]),
                       devices=raw["devices"], scoped=tuple(raw["scoped"]), threads_left=raw["threads_left"],
                       reason=raw["error"])


# Where the libraries a kernel candidate's process uses write by default, and the variables that move them.
# CUDA's driver: its JIT cache ~/.nv/ComputeCache (CUDA_CACHE_PATH). Triton: ~/.triton/{cache,dump,override}
# (TRITON_HOME, TRITON_CACHE_DIR). PyTorch: /tmp/torchinductor_<user> (TORCHINDUCTOR_CACHE_DIR), NVRTC kernels
# in ~/.cache/torch/kernels (PYTORCH_KERNEL_CACHE_PATH), other caches in ~/.cache (XDG_CACHE_HOME). Compilers
# (gcc, ptxas) and Python's tempfile: $TMPDIR.
def private_env(base: Path) -> dict[str, str]:
    """Create `base/{tmp,home,triton-cache,inductor}` and return the environment that sends every writer above
    there (HOME included, so that any other ~/.something lands there too)."""
    home, tmp = base / "home", base / "tmp"
    env = {
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "TEMP": str(tmp),
        "TMP": str(tmp),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "TRITON_HOME": str(home),
        "TRITON_CACHE_DIR": str(base / "triton-cache"),
        "TRITON_DUMP_DIR": str(home / ".triton" / "dump"),
        "TORCHINDUCTOR_CACHE_DIR": str(base / "inductor"),
        "CUDA_CACHE_PATH": str(home / ".nv" / "ComputeCache"),
        "PYTORCH_KERNEL_CACHE_PATH": str(home / ".cache" / "torch" / "kernels"),
    }
    for path in (home, tmp, base / "triton-cache", base / "inductor"):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return env


def use_private_env(base: Path) -> dict[str, str]:
    """`private_env` applied to this process: os.environ, and tempfile's cached directory (which the parent
    may have computed before a fork)."""
    env = private_env(base)
    os.environ.update(env)
    tempfile.tempdir = env["TMPDIR"]
    return env


def looks_refused(text: str) -> bool:
    """Whether an error message is a refused write (EACCES/EPERM), what a guarded candidate gets."""
    return any(k in text for k in ("PermissionError", "Permission denied", "Operation not permitted"))


# ---- landlock: begin. Also run as text by the sandbox's helper (`evo/eval/sandbox.py`), where only
# ctypes, errno and os are imported: use nothing else here, and name everything `_ll_*`.

_LL_CREATE_RULESET, _LL_ADD_RULE, _LL_RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and aarch64
_LL_ARCHES = ("x86_64", "aarch64", "arm64")
_LL_CREATE_RULESET_VERSION = 1 << 0
_LL_RULE_PATH_BENEATH = 1
_LL_WRITE_FILE = 1 << 1
_LL_REMOVE_DIR, _LL_REMOVE_FILE = 1 << 4, 1 << 5
_LL_MAKE = (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)  # char dir reg sock fifo block sym
_LL_REFER = 1 << 13  # ABI 2
_LL_TRUNCATE = 1 << 14  # ABI 3
_LL_FILE_RIGHTS = _LL_WRITE_FILE | _LL_TRUNCATE  # of the rights above, those a rule on a file (not a dir) may hold
_LL_SCOPE_ABSTRACT_UNIX_SOCKET, _LL_SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_LL_RESTRICT_SELF_TSYNC = 1 << 3  # ABI 8: every thread of the process
_LL_PR_SET_NO_NEW_PRIVS = 38
_LL_DEVICE_NAMES = ("null", "zero", "full", "random", "urandom", "tty")
_LL_DEVICE_PREFIXES = ("nvidia", "dri", "kfd")  # NVIDIA nodes and nvidia-caps/, DRM render nodes, ROCm


class _LLPathBeneath(ctypes.Structure):
    _pack_ = 1  # struct landlock_path_beneath_attr is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _ll_libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _ll_err(what: str) -> str:
    err = ctypes.get_errno()
    return f"{what} failed: {errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def _ll_abi(libc) -> tuple[int, str]:
    machine = os.uname().machine
    if machine not in _LL_ARCHES:
        return 0, f"Landlock syscall numbers are not known here for {machine}"
    abi = libc.syscall(ctypes.c_long(_LL_CREATE_RULESET), None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_LL_CREATE_RULESET_VERSION))
    if abi >= 1:
        return int(abi), ""
    err = ctypes.get_errno()
    why = {errno.ENOSYS: "the kernel has no Landlock, or a seccomp profile refuses it",
           errno.EOPNOTSUPP: "Landlock is built in but not enabled at boot (lsm=)"}.get(err, os.strerror(err))
    return 0, f"Landlock: {errno.errorcode.get(err, str(err))}, {why}"


def _ll_handled(abi: int) -> int:
    rights = _LL_WRITE_FILE | _LL_REMOVE_DIR | _LL_REMOVE_FILE | _LL_MAKE
    if abi >= 2:
        rights |= _LL_REFER
    if abi >= 3:
        rights |= _LL_TRUNCATE
    return rights


def _ll_allow(libc, ruleset: int, path: str, dir_rights: int, nofollow: bool) -> str | None:
    """Add a rule for path: "added", "skipped" (absent, unreachable, not a dir or device) or an error."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0))
    except OSError:
        return "skipped"
    try:
        mode = os.fstat(fd).st_mode
        if (mode & 0o170000) == 0o040000:  # a directory
            rights = dir_rights
        elif nofollow and (mode & 0o170000) == 0o020000:  # a character device (never a block device)
            rights = dir_rights & _LL_FILE_RIGHTS
        else:
            return "skipped"
        attr = _LLPathBeneath(rights, fd)
        if libc.syscall(ctypes.c_long(_LL_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_LL_RULE_PATH_BENEATH),
                        ctypes.byref(attr), ctypes.c_uint32(0)) != 0:
            return _ll_err(f"landlock_add_rule({path})")
        return "added"
    finally:
        os.close(fd)


def _ll_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _ll_restrict(writable: list[str], devices: bool, scope: bool) -> dict:
    """Landlock the calling thread (every thread with ABI >= 8) and its future children; see the module doc.
    Returns {"abi" (0: not restricted), "error", "writable", "devices", "scoped", "threads_left"}."""
    out = {"abi": 0, "error": "", "writable": [], "devices": 0, "scoped": [], "threads_left": 0}
    try:
        libc = _ll_libc()
    except OSError as exc:
        out["error"] = f"no C library to call Landlock through: {exc}"
        return out
    abi, out["error"] = _ll_abi(libc)
    if not abi:
        return out
    handled = _ll_handled(abi)
    scoped = _LL_SCOPE_ABSTRACT_UNIX_SOCKET | _LL_SCOPE_SIGNAL if scope and abi >= 6 else 0
    attr = (ctypes.c_uint64 * 3)(handled, 0, scoped)  # handled_access_fs, handled_access_net, scoped
    size = 24 if scoped else 8  # an older kernel refuses fields it does not know, even zero ones past its size
    if libc.prctl(ctypes.c_int(_LL_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        out["error"] = _ll_err("prctl(PR_SET_NO_NEW_PRIVS)")
        return out
    ruleset = libc.syscall(ctypes.c_long(_LL_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        out["error"] = _ll_err("landlock_create_ruleset")
        return out
    ruleset = int(ruleset)
    try:
        for path in writable:
            added = _ll_allow(libc, ruleset, path, handled, False)
            if added == "added":
                out["writable"].append(path)
            elif added != "skipped":
                out["error"] = added
                return out
        if devices:
            try:
                names = sorted(os.listdir("/dev"))
            except OSError:
                names = []
            for name in names:
                if name in _LL_DEVICE_NAMES or name.startswith(_LL_DEVICE_PREFIXES):
                    if _ll_allow(libc, ruleset, "/dev/" + name, handled & _LL_FILE_RIGHTS, True) == "added":
                        out["devices"] += 1
        threads = _ll_threads()
        flags = _LL_RESTRICT_SELF_TSYNC if abi >= 8 else 0
        if libc.syscall(ctypes.c_long(_LL_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(flags)) != 0:
            out["error"] = _ll_err("landlock_restrict_self")
            return out
    finally:
        os.close(ruleset)
    out["abi"] = abi
    out["scoped"] = ["abstract_unix_socket", "signal"] if scoped else []
    out["threads_left"] = 0 if flags else threads - 1
    return out


def _ll_summary(out: dict) -> str:
    """GuardStatus.summary of a `_ll_restrict` result, for the sandbox's helper."""
    if not out["abi"]:
        return f"filesystem isolation: unavailable ({out['error']})"
    text = f"filesystem isolation: landlock ABI {out['abi']}, writes only beneath {', '.join(out['writable'])}"
    if out["devices"]:
        text += f" and to {out['devices']} device files"
    if out["scoped"]:
        text += f"; scoped: {', '.join(out['scoped'])}"
    if out["threads_left"]:
        text += f"; {out['threads_left']} thread(s) started before the guard keep full access"
    return text


# ---- landlock: end
