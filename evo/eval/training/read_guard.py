"""The read guard of the training family: a process that runs candidate code cannot open the held-out shards.

Landlock grants rights and never denies them, so "every file but these" is written as its complement: the
right to read files (`LANDLOCK_ACCESS_FS_READ_FILE`) is granted beneath every entry of every folder on the
way from `/` to a denied file, except the entries that lead to it, and beneath every entry of the denied
file's own folder except the denied files. Symbolic links among those entries get no rule (a link to a
folder on the way would grant it whole); what they point to is granted at its own place. Everything that existed when the guard was made stays readable
(Python, torch, the repo, the training shards, /proc, /dev); what a folder on the way gains later is not.

The ruleset is stacked on the sandbox's write guard (`evo/eval/fs_guard.py`). A Landlock layer that does not
handle `REFER` refuses every rename or link into another folder (Triton's cache makes such renames), so this
layer handles `REFER` and grants it beneath `/`: the write layer still decides every write.

The guard is made by the harness's own code in the child, before the candidate is imported, and `probe`
then tries to open each denied file: the child reports both to the trusted side before any candidate code
runs. A file that the mount view hides (a data folder under /tmp or $HOME) cannot be opened either way.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable

from evo.eval.fs_guard import _ll_abi, _ll_err, _ll_libc, _LLPathBeneath

_READ_FILE = 1 << 2
_REFER = 1 << 13  # ABI >= 2
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH = 1
_TSYNC = 1 << 3  # ABI 8: every thread of the process


def _rule(libc, ruleset: int, path: str, rights: int) -> str | None:
    """Grant `rights` beneath `path` (a file gets the file rights only); None, or why it failed."""
    try:
        # Never through a link: `pytest-current -> pytest-125` would grant the folder on the way itself. What a
        # link points to is granted at its real place, which is some folder's entry on the way or beneath one.
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None  # gone meanwhile: nothing to read there
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return None
        if not stat.S_ISDIR(mode):
            rights &= _READ_FILE  # REFER is a directory right
        if not rights:
            return None
        attr = _LLPathBeneath(rights, fd)
        if libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(attr), ctypes.c_uint32(0)) != 0:
            return _ll_err(f"landlock_add_rule({path})")
        return None
    finally:
        os.close(fd)


def _complement(denied: set[str]) -> tuple[set[str], set[str]]:
    """(paths to grant reading beneath, folders on the way to a denied file)."""
    on_way: set[str] = set()
    for path in denied:
        parent = os.path.dirname(path)
        while True:
            on_way.add(parent)
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    grant: set[str] = set()
    for folder in on_way:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if path not in on_way and path not in denied:
                grant.add(path)
    return grant, on_way


def deny_reads(paths: Iterable[str]) -> dict[str, object]:
    """Make the files `paths` unreadable to this process and all it starts, for good. Returns the status:
    {"active": bool, "abi": int, "denied": [...], "reason": str}; never raises for what the kernel lacks."""
    denied = {os.path.realpath(os.path.abspath(p)) for p in paths}
    status: dict[str, object] = {"active": False, "abi": 0, "denied": sorted(denied), "reason": ""}
    if not denied:
        status.update(active=True, reason="nothing to deny")
        return status
    try:
        libc = _ll_libc()
    except OSError as e:
        status["reason"] = f"no C library: {e}"
        return status
    abi, why = _ll_abi(libc)
    if not abi:
        status["reason"] = why
        return status
    handled = _READ_FILE | (_REFER if abi >= 2 else 0)
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        status["reason"] = _ll_err("landlock_create_ruleset")
        return status
    try:
        grant, _ = _complement(denied)
        if abi >= 2:  # renames between folders stay the write layer's business
            err = _rule(libc, ruleset, "/", _REFER)
            if err:
                status["reason"] = err
                return status
        for path in sorted(grant):
            err = _rule(libc, ruleset, path, _READ_FILE | _REFER)
            if err:
                status["reason"] = err
                return status
        if libc.prctl(ctypes.c_int(38), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS, which Landlock needs
            status["reason"] = _ll_err("prctl(PR_SET_NO_NEW_PRIVS)")
            return status
        flags = _TSYNC if abi >= 8 else 0
        if libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(flags)) != 0:
            status["reason"] = _ll_err("landlock_restrict_self")
            return status
    finally:
        os.close(int(ruleset))
    status.update(active=True, abi=abi)
    return status


def probe(paths: Iterable[str]) -> dict[str, str]:
    """Try to open each file for reading: {path: "refused" | "absent" | "READABLE"}."""
    out: dict[str, str] = {}
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            out[path] = "refused"
        except FileNotFoundError:
            out[path] = "absent"
        except OSError as e:
            out[path] = "refused" if e.errno in (errno.EACCES, errno.EPERM) else f"error {e.errno}"
        else:
            os.close(fd)
            out[path] = "READABLE"
    return out
