"""Entry point of the sandboxed child: import the candidate, run it, save its raw outputs.

Run as `python -P -m evo.eval.child TASK_ROOT` inside the candidate's working directory (which holds
`candidate.py`). It decides nothing: the candidate was screened on the trusted side before this process
started, and its outputs (`outputs.npz`) are validated and scored there afterwards, then audited in full
(`evo/eval/pipeline.py`); nothing this process writes is taken at face value. `-P` keeps the working
directory off `sys.path` until the task's reference is loaded, so a candidate's folder cannot stand in for
the modules this file imports.

The sandbox has restricted this process before it started (`evo/eval/sandbox.py`: a read-only mount view
and Landlock, `evo/eval/fs_guard.py`): it may write only in its working directory and private tmpfs. A
candidate that tries to write elsewhere (a `.pth` into site-packages, a cache under /tmp) fails here with a
reason that starts with `dynamic:fs_guard:` (the local backend reports it as that dynamic check).

Exit status: 0 with `outputs.npz` written; anything else is a failure of the candidate (the message of a
`SystemExit` or the traceback is on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evo.program import MAIN_FILE
from evo.task import load_module

OUTPUTS = "outputs.npz"
FS_GUARD = "dynamic:fs_guard"  # the prefix of the message of a write the sandbox refused


def main(argv: list[str]) -> int:
    task_root = Path(argv[1])
    workdir = Path.cwd()
    reference = load_module(task_root / "reference.py", "evo_reference")  # before the candidate's folder
    sys.path.insert(0, str(workdir))  # is on sys.path: the candidate's own modules import from it
    try:
        candidate = load_module(workdir / MAIN_FILE, "candidate")
        outputs = reference.run_candidate(candidate)
    except PermissionError as e:  # EACCES/EPERM: the filesystem guard refused a write (or a signal)
        raise SystemExit(f"{FS_GUARD}: refused by the sandbox (a candidate may write only in its "
                         f"working directory): {e}") from e
    if not isinstance(outputs, dict):
        raise TypeError(f"run_candidate returned {type(outputs).__name__}, expected dict")
    np.savez(workdir / OUTPUTS, **{str(k): np.asarray(v) for k, v in outputs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
