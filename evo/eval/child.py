"""Entry point of the sandboxed child: import the candidate, run it, save its raw outputs.

Run as `python -m evo.eval.child TASK_ROOT` inside the candidate's working directory (which
holds `candidate.py`). Nothing here is trusted: the outputs it writes to `outputs.npz` are
validated and scored by the engine side (`Task.score_outputs`), never taken at face value.

The sandbox has restricted this process before it started (`evo/eval/sandbox.py`: a read-only mount view
and Landlock, `evo/eval/fs_guard.py`): it may write only in its working directory and private tmpfs. A
candidate that tries to write elsewhere (a `.pth` into site-packages, a cache under /tmp) fails here with a
reason that names the guard.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evo.program import MAIN_FILE
from evo.task import load_module

OUTPUTS = "outputs.npz"


def main(argv: list[str]) -> int:
    task_root = Path(argv[1])
    workdir = Path.cwd()
    sys.path.insert(0, str(workdir))
    reference = load_module(task_root / "reference.py", "evo_reference")
    try:
        candidate = load_module(workdir / MAIN_FILE, "candidate")
        outputs = reference.run_candidate(candidate)
    except PermissionError as e:  # EACCES/EPERM: the filesystem guard refused a write (or a signal)
        raise SystemExit(f"dynamic:fs_guard: refused by the sandbox (a candidate may write only in its "
                         f"working directory): {e}") from e
    if not isinstance(outputs, dict):
        raise TypeError(f"run_candidate returned {type(outputs).__name__}, expected dict")
    np.savez(workdir / OUTPUTS, **{str(k): np.asarray(v) for k, v in outputs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
