"""Starting a sandboxed child of the training harness: its work dir, its job, its guards' report.

`start_child` makes a fresh work dir holding the candidate's files and `job.json`, starts the child in the
sandbox behind a `ChildLink`, waits for its connection and reads the guards' report (sent before the
candidate is imported: `childside.py`), which becomes the checks `dynamic:data_split` (the held-out shards
could not be opened) and `dynamic:net_guard`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from evo.data.shards import load_manifest
from evo.eval import wire
from evo.eval.sandbox import Limits
from evo.eval.training.childside import JOB_FILE
from evo.eval.training.link import ChildLink, LinkError
from evo.eval.training.spec import TrainingSpec

_REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_SPLIT, NET_GUARD = "dynamic:data_split", "dynamic:net_guard"


class ChildFailed(Exception):
    """The child never reported its guards (it died first): the candidate's failure, with the sandbox's words."""


def held_out(data: str) -> list[str]:
    """The shards a candidate's process may not open: every split but `train`."""
    manifest = load_manifest(Path(data))
    return [str(p.resolve()) for split in manifest.splits if split != "train" for p in manifest.shard_paths(split)]


def write_files(workdir: Path, files: dict[str, str]) -> None:
    """The candidate's files in `workdir` (their paths were checked by the family when the job was made)."""
    for rel, text in files.items():
        path = (workdir / rel).resolve()
        if not path.is_relative_to(workdir.resolve()):
            raise ValueError(f"file path {rel!r} leaves the program directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def start_child(module: str, spec: TrainingSpec, job: dict[str, Any], workdir: Path, timeout_s: float,
                extra: dict[str, Any] | None = None) -> tuple[ChildLink, list[tuple[str, bool, str]]]:
    """Start `evo.eval.training.<module>` sandboxed in `workdir` (made here unless the caller made it fresh and
    put data in it); its link and its guards' checks."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    write_files(workdir, job["files"])
    denied = held_out(spec.data)
    cuda = spec.device.startswith("cuda")
    (workdir / JOB_FILE).write_text(json.dumps({**job, "spec": spec.to_dict(), "denied": denied,
                                                "write_guard_here": cuda, **(extra or {})}))
    limits = Limits(timeout_s=timeout_s, memory_mb=spec.memory_mb, max_file_mb=256, max_processes=256,
                    write_guard=not cuda)
    argv = [sys.executable, "-P", "-m", f"evo.eval.training.{module}"]
    # A name for the sandbox's uid, which no passwd file holds: torch asks for it (getpass) to name its caches.
    env = {"PYTHONPATH": str(_REPO_ROOT), "USER": "evo-candidate", "LOGNAME": "evo-candidate"}
    link = ChildLink(argv, workdir, limits, env).start()
    try:
        link.accept(min(spec.startup_s, timeout_s))
        link.sock.settimeout(spec.startup_s)
        report, _ = wire.recv(link.sock)
    except (LinkError, wire.WireError, OSError) as e:
        link.close()
        raise ChildFailed(str(e) if isinstance(e, LinkError) else link.why_gone("before it reported its guards")) from e
    link.sock.settimeout(None)
    probe = report.get("probe", {})
    readable = sorted(p for p in denied if probe.get(p) not in ("refused", "absent"))
    read = report.get("read", {})
    if readable or (denied and not read.get("active") and not all(probe.get(p) == "absent" for p in denied)):
        split = (DATA_SPLIT, False, f"the candidate's process could open held-out shards ({', '.join(readable)[:300]}); "
                 f"read guard: {read.get('reason') or 'inactive'}")
    else:
        split = (DATA_SPLIT, True, "")
    net = report.get("net", {})
    checks = [split, (NET_GUARD, bool(net.get("active")), "" if net.get("active") else str(net.get("summary", "")))]
    link.write_guard = report.get("writes") if cuda else None
    return link, checks


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
